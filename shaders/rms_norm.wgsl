// RMSNorm with a learned weight, in place, over segments of length d inside the rows of a
// matrix: segment s of row r starts at r * row_stride + col_off + s * d. This normalises each
// head of q or k where it lies inside a fused qkv activation. One invocation per segment.
// Lengths and offsets count Elem (elem_*.wgsl).

struct Params {
    rows: u32,
    segments: u32,
    d: u32,
    row_stride: u32,
    col_off: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weight: array<Elem>;
@group(0) @binding(2) var<storage, read_write> x: array<Elem>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.rows * p.segments) {
        return;
    }
    let base = (i / p.segments) * p.row_stride + p.col_off + (i % p.segments) * p.d;
    var ss = 0.0;
    for (var j = 0u; j < p.d; j++) {
        let v = x[base + j];
        ss += hsum(v * v);
    }
    let r = inverseSqrt(ss / f32(p.d * LANES) + p.eps);
    for (var j = 0u; j < p.d; j++) {
        x[base + j] = x[base + j] * r * weight[j];
    }
}
