// GroupNorm on NCHW activations with per-channel affine and an optional fused activation (the
// VAE follows most GroupNorms by SiLU). One workgroup per (sample, group): the group's
// channels are contiguous in NCHW, so its statistics are those of one span (welford.wgsl, one
// pass); then each channel is written with its weight and bias loaded once. x is read twice,
// through x_flat (flat_in_*.wgsl). `hw` counts Elem (elem_*.wgsl): vec4 when a channel's
// pixels are whole vec4s.

struct Params {
    // (sample, group) index of this dispatch's first workgroup, and Elem index of its span.
    group0: u32,
    elem0: u32,
    channels: u32,
    groups: u32,
    hw: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<Elem>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cpg = p.channels / p.groups;
    // sg = s groups + g for group g of sample s, whose channels start at
    // (s channels + g cpg) hw = sg cpg hw.
    let sg = p.group0 + wid.x;
    let base = sg * cpg * p.hw;
    let pivot = lane(x_flat(base), 0u);
    var acc: Running;
    for (var i = lid; i < cpg * p.hw; i += WG) {
        welford_add(&acc, x_flat(base + i) - pivot);
    }
    var sets: array<Stats, SETS>;
    sets[0] = running_stats(acc);
    let stats = workgroup_stats(lid, sets)[0];
    let rstd = inverseSqrt(stats.z / stats.x + p.eps);
    for (var c = 0u; c < cpg; c++) {
        let ch = (sg % p.groups) * cpg + c;
        let scale = rstd * weight[ch];
        let shift = bias[ch];
        let at = base + c * p.hw;
        for (var i = lid; i < p.hw; i += WG) {
            y[at + i] = activate_elem(((x_flat(at + i) - pivot) - stats.y) * scale + shift, ACT);
        }
    }
}
