// y = ACT(x) element-wise (ACT: a define, see `activate` in common.wgsl); n counts Elem
// (elem_*.wgsl).

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> y: array<Elem>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i < p.n) {
        y[i] = activate_elem(x[i], ACT);
    }
}
