// LayerNorm over rows of d floats (`cols` Elem, see elem_*.wgsl). Optional affine (weight, bias)
// and optional adaLN modulation y * (1 + scale) + shift, where shift and scale are chunks of a
// per-sample modulation row shared by `tokens` rows. Modulation stride and offsets count Elem.
//
// One workgroup normalises ROWS consecutive rows and reads x twice (x_at, rows_in_*.wgsl): once
// for the statistics (welford.wgsl, one pass), once to write y. One reduction serves all ROWS
// rows (SETS = ROWS), and the per-column weight, bias, shift and scale are loaded once for them
// rather than once per row. Which of those exist is fixed by the defines HAS_WEIGHT, HAS_BIAS
// and HAS_MOD (see `activate` in common.wgsl for why not uniforms), and each row's sample is
// divided out once per workgroup, not per column: together 1.3x (with modulation) to 2x
// (without) faster on llvmpipe.

struct Params {
    // Rows [row0, rows) are this dispatch's.
    row0: u32,
    rows: u32,
    d: u32,
    cols: u32,
    tokens: u32,
    eps: f32,
    mod_stride: u32,
    shift_off: u32,
    scale_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> weight: array<Elem>;
@group(0) @binding(3) var<storage, read> bias: array<Elem>;
@group(0) @binding(4) var<storage, read> modv: array<Elem>;
@group(0) @binding(5) var<storage, read_write> y: array<Elem>;

// Rows per workgroup: one statistics set each (the op defines SETS).
const ROWS: u32 = SETS;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let first = p.row0 + (wid.x + wid.y * groups.x) * ROWS;
    if (first >= p.rows) {
        return;
    }
    let count = min(ROWS, p.rows - first);
    var stats: array<Stats, ROWS>;
    var pivot: array<f32, ROWS>;
    for (var r = 0u; r < count; r++) {
        let row = first + r;
        pivot[r] = lane(x_at(row, 0u), 0u);
        var acc: Running;
        for (var i = lid; i < p.cols; i += WG) {
            welford_add(&acc, x_at(row, i) - pivot[r]);
        }
        stats[r] = running_stats(acc);
    }
    stats = workgroup_stats(lid, stats);
    var rstd: array<f32, ROWS>;
    var samples: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        rstd[r] = inverseSqrt(stats[r].z / f32(p.d) + p.eps);
        samples[r] = (first + r) / p.tokens;
    }

    for (var i = lid; i < p.cols; i += WG) {
        var w = Elem(1.0);
        var b = Elem(0.0);
        if (HAS_WEIGHT != 0u) {
            w = weight[i];
        }
        if (HAS_BIAS != 0u) {
            b = bias[i];
        }
        var sample = 0xffffffffu;
        var scale = Elem(1.0);
        var shift = Elem(0.0);
        for (var r = 0u; r < count; r++) {
            let row = first + r;
            if (HAS_MOD != 0u && samples[r] != sample) {
                sample = samples[r];
                let m = sample * p.mod_stride + i;
                scale = 1.0 + modv[m + p.scale_off];
                shift = modv[m + p.shift_off];
            }
            y[row * p.cols + i] = (((x_at(row, i) - pivot[r]) - stats[r].y) * rstd[r] * w + b) * scale + shift;
        }
    }
}
