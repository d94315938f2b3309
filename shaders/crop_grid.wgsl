// Crop rows laid out on an M x M grid (a stored position embedding [M*M, D], in its stored
// dtype through the dtype snippet) to an h x w window at (top, left), widened to f32:
// out[i * w + j] = src[(top + i) * M + left + j]. The binding may start part-way into the
// tensor; `first` is the element index of its first crop row relative to the binding.

struct Params {
    n: u32,
    d: u32,
    grid: u32,
    w: u32,
    first: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<WPack>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = flat_index(gid, groups);
    if (e >= p.n) {
        return;
    }
    let row = e / p.d;
    let src_row = (row / p.w) * p.grid + row % p.w;
    dst[e] = w_at(p.first + src_row * p.d + e % p.d);
}
