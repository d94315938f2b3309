// Nearest-neighbour x2 upsampling of NCHW activations: out[c, y, x] = in[c, y / 2, x / 2].

struct Params {
    n: u32,
    h: u32,
    w: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.n) {
        return;
    }
    let ow = 2u * p.w;
    let ox = i % ow;
    let oy = (i / ow) % (2u * p.h);
    let plane = i / (ow * 2u * p.h);
    y[i] = x[(plane * p.h + oy / 2u) * p.w + ox / 2u];
}
