// Crop rows laid out on an M x M grid (a stored position embedding [M*M, D]) to an h x w window
// at (top, left): out[i * w + j] = src[(top + i) * M + left + j].

struct Params {
    n: u32,
    d: u32,
    grid: u32,
    w: u32,
    top: u32,
    left: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = flat_index(gid, groups);
    if (e >= p.n) {
        return;
    }
    let row = e / p.d;
    let src_row = (p.top + row / p.w) * p.grid + p.left + row % p.w;
    dst[e] = src[src_row * p.d + e % p.d];
}
