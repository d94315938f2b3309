// GroupNorm on NCHW activations with per-channel affine and an optional fused activation (the
// VAE follows most GroupNorms by SiLU). One workgroup per (sample, group); two-pass f32
// statistics over the group's channels x pixels.

struct Params {
    channels: u32,
    groups: u32,
    hw: u32,
    eps: f32,
    act: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cpg = p.channels / p.groups;
    let n = cpg * p.hw;
    // Channels of one group are contiguous in NCHW, so the group is one contiguous span.
    let base = (wid.y * p.channels + wid.x * cpg) * p.hw;
    // Work with x - x[0] rather than x: with a large mean, x - x[0] is exact and small, so
    // neither the partial sums nor the centred values lose the digits a rounded f32 mean would
    // (tested on 1e5-long rows with mean 1e3).
    let pivot = x[base];
    var s = 0.0;
    for (var i = lid; i < n; i += WG) {
        s += x[base + i] - pivot;
    }
    let mean = workgroup_sum(lid, s) / f32(n);
    var q = 0.0;
    for (var i = lid; i < n; i += WG) {
        let c = (x[base + i] - pivot) - mean;
        q += c * c;
    }
    let rstd = inverseSqrt(workgroup_sum(lid, q) / f32(n) + p.eps);
    for (var i = lid; i < n; i += WG) {
        let c = wid.x * cpg + i / p.hw;
        y[base + i] = activate(((x[base + i] - pivot) - mean) * rstd * weight[c] + bias[c], p.act);
    }
}
