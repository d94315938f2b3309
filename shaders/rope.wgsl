// Rotary position embedding on adjacent pairs (x[2j], x[2j+1]), in place, for every head
// segment of length d inside strided rows (q or k inside a fused qkv activation). The angle
// tables cos/sin [tokens, d/2] hold the per-axis frequencies already concatenated; row r uses
// table row r mod tokens (the same positions for every sample of the batch).

struct Params {
    rows: u32,
    heads: u32,
    d: u32,
    row_stride: u32,
    col_off: u32,
    tokens: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let half_d = p.d / 2u;
    let i = flat_index(gid, groups);
    if (i >= p.rows * p.heads * half_d) {
        return;
    }
    let j = i % half_d;
    let h = (i / half_d) % p.heads;
    let r = i / (half_d * p.heads);
    let t = (r % p.tokens) * half_d + j;
    let base = r * p.row_stride + p.col_off + h * p.d + 2u * j;
    let a = x[base];
    let b = x[base + 1u];
    x[base] = a * cos_t[t] - b * sin_t[t];
    x[base + 1u] = a * sin_t[t] + b * cos_t[t];
}
