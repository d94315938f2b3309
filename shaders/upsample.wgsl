// Nearest-neighbour x2 upsampling of NCHW activations: out[c, y, x] = in[c, y / 2, x / 2].
// One invocation per input element writes its 2x2 block as two vec2 (a quarter of the loads
// and half the stores of one invocation per output element).

struct Params {
    n: u32,
    w: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.n) {
        return;
    }
    // Input row r (over all planes) becomes output rows 2r and 2r + 1, each w vec2 long.
    let r = i / p.w;
    let at = 2u * r * p.w + i % p.w;
    let v = vec2(x[i]);
    y[at] = v;
    y[at + p.w] = v;
}
