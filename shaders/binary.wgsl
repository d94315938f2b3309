// Element-wise a (op) b with b broadcast by repetition (b index = i mod len(b)), into `out`.
// OP: 0 add, 1 multiply.

override OP: u32 = 0u;

struct Params {
    n: u32,
    nb: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.n) {
        return;
    }
    let bv = b[i % p.nb];
    out[i] = select(a[i] + bv, a[i] * bv, OP == 1u);
}
