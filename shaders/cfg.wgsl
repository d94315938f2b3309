// Classifier-free guidance: out = u + g (c - u), where the batch holds the unconditional rows
// first and the conditional rows second (n Elem each, see elem_*.wgsl).

struct Params {
    n: u32,
    g: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> v: array<Elem>;
@group(0) @binding(2) var<storage, read_write> out: array<Elem>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i < p.n) {
        let u = v[i];
        out[i] = u + p.g * (v[p.n + i] - u);
    }
}
