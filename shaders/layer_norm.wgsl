// LayerNorm over rows of d floats (`cols` Elem, see elem_*.wgsl), f32 statistics in two passes
// (mean, then the mean square of the centred values), so long rows with a large mean keep their
// precision. One workgroup per row. Optional affine (weight, bias) and optional adaLN
// modulation y * (1 + scale) + shift, where shift and scale are chunks of a per-sample
// modulation row shared by `tokens` rows. Modulation stride and offsets count Elem too.

struct Params {
    rows: u32,
    d: u32,
    cols: u32,
    tokens: u32,
    eps: f32,
    has_weight: u32,
    has_bias: u32,
    has_mod: u32,
    mod_stride: u32,
    shift_off: u32,
    scale_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> weight: array<Elem>;
@group(0) @binding(3) var<storage, read> bias: array<Elem>;
@group(0) @binding(4) var<storage, read> modv: array<Elem>;
@group(0) @binding(5) var<storage, read_write> y: array<Elem>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * groups.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    // Work with x - x[0] rather than x: with a large mean, x - x[0] is exact and small, so
    // neither the partial sums nor the centred values lose the digits a rounded f32 mean would
    // (tested on 1e5-long rows with mean 1e3).
    let pivot = lane0(x[base]);
    var s = 0.0;
    for (var i = lid; i < p.cols; i += WG) {
        s += hsum(x[base + i] - pivot);
    }
    let mean = workgroup_sum(lid, s) / f32(p.d);
    var q = 0.0;
    for (var i = lid; i < p.cols; i += WG) {
        let c = (x[base + i] - pivot) - mean;
        q += hsum(c * c);
    }
    let rstd = inverseSqrt(workgroup_sum(lid, q) / f32(p.d) + p.eps);
    let mrow = (row / p.tokens) * p.mod_stride;
    for (var i = lid; i < p.cols; i += WG) {
        var v = ((x[base + i] - pivot) - mean) * rstd;
        if (p.has_weight != 0u) {
            v *= weight[i];
        }
        if (p.has_bias != 0u) {
            v += bias[i];
        }
        if (p.has_mod != 0u) {
            v = v * (1.0 + modv[mrow + p.scale_off + i]) + modv[mrow + p.shift_off + i];
        }
        y[base + i] = v;
    }
}
