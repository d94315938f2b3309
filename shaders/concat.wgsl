// Concatenate [B, L1, D] and [B, L2, D] along tokens into [B, L1 + L2, D], or split it back
// (SPLIT = 1). One invocation per element of the concatenation.

override SPLIT: u32 = 0u;

struct Params {
    n: u32,
    l1: u32,
    l2: u32,
    d: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> joined: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.n) {
        return;
    }
    let col = i % p.d;
    let l = p.l1 + p.l2;
    let t = (i / p.d) % l;
    let s = i / (p.d * l);
    if (t < p.l1) {
        let j = (s * p.l1 + t) * p.d + col;
        if (SPLIT == 1u) { a[j] = joined[i]; } else { joined[i] = a[j]; }
    } else {
        let j = (s * p.l2 + t - p.l1) * p.d + col;
        if (SPLIT == 1u) { b[j] = joined[i]; } else { joined[i] = b[j]; }
    }
}
