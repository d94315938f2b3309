// [B, R, C] -> [B, C, R] (NCHW planes to token rows and back). One invocation per output element.

struct Params {
    n: u32,
    r: u32,
    c: u32,
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
    // Output (b, c, r) reads input (b, r, c).
    let r = i % p.r;
    let c = (i / p.r) % p.c;
    let b = i / (p.r * p.c);
    y[i] = x[(b * p.r + r) * p.c + c];
}
