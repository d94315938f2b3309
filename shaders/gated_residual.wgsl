// Gated residual x += gate * y in place, the gate a chunk of a per-sample modulation row
// broadcast over that sample's `tokens` rows of width d.

struct Params {
    n: u32,
    d: u32,
    tokens: u32,
    mod_stride: u32,
    gate_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> modv: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.n) {
        return;
    }
    let m = (i / (p.d * p.tokens)) * p.mod_stride + i % p.d;
    x[i] += modv[m + p.gate_off] * y[i];
}
