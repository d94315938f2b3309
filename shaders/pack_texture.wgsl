// Copy f32 rows into an rgba32float texture, four columns per texel, for the texture kernels.
// Source row r of sample b (rows_per_batch rows per sample, `stride` floats apart, columns
// from col_off) lands in texture row b * dst_rows_per_batch + dst_row_off + r. One invocation
// per texel; the source is read as vec4 (stride and col_off are multiples of 4).

struct Params {
    texels: u32,
    rows: u32,
    stride4: u32,
    col_off4: u32,
    rows_per_batch: u32,
    dst_rows_per_batch: u32,
    dst_row_off: u32,
    src_row0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.texels * p.rows) {
        return;
    }
    let t = i % p.texels;
    let r = i / p.texels;
    let b = r / p.rows_per_batch;
    let drow = b * p.dst_rows_per_batch + p.dst_row_off + r % p.rows_per_batch;
    textureStore(dst, vec2<u32>(t, drow), src[(p.src_row0 + r) * p.stride4 + p.col_off4 + t]);
}
