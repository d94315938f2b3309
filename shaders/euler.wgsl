// Flow-matching Euler step in place: x += (sigma_next - sigma) * v; n counts Elem
// (elem_*.wgsl).

struct Params {
    n: u32,
    dt: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> v: array<Elem>;
@group(0) @binding(2) var<storage, read_write> x: array<Elem>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i < p.n) {
        x[i] += p.dt * v[i];
    }
}
