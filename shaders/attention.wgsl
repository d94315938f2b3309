// Fused attention softmax(q k^T * scale) v with an online softmax: no L x L matrix is stored.
// The buffer kernel, for hardware GPUs. A workgroup of 64 invocations takes 64 query rows of
// one (sample, head), one row each, with its query and output accumulator in registers (D4
// vec4, the head dim / 4, and TK, keys per tile, are build-time defines). Keys and values pass
// through workgroup memory in tiles of TK rows: the workgroup stages a tile together
// (neighbouring invocations reading neighbouring addresses), then every invocation reads the
// same staged row (a broadcast) against its own query, so each key is fetched from memory
// once per 64 queries instead of once per query. Keys and values come from one or two sources
// (two streams attended as one concatenated sequence without copying them together); every
// operand is addressed as rows with a stride and a column offset, so q, k and v are read
// straight out of fused qkv activations. The build-time switches CAUSAL (key t visible to
// query i only when t <= i: CLIP's mask) and BIAS (an additive [heads, lq, lk] table: T5's
// relative position bias) change the scores before the softmax; key 0 is visible to every
// query, so each running maximum is a real score from the first tile on.

// Query rows per workgroup.
const ROWS: u32 = 64u;

struct Params {
    batch: u32,
    heads: u32,
    scale: f32,
    lq: u32,
    q_stride: u32,
    q_off: u32,
    l1: u32,
    kv1_stride: u32,
    k1_off: u32,
    v1_off: u32,
    l2: u32,
    kv2_stride: u32,
    k2_off: u32,
    v2_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kv1: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kv2: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

// One tile of keys and values, [key within the tile][vec4 of the head].
var<workgroup> ks: array<vec4<f32>, TK * D4>;
var<workgroup> vs: array<vec4<f32>, TK * D4>;

// Stage keys t0 .. t0 + TK of sample b, head h; keys past the end are zeros (masked later).
fn stage(b: u32, h: u32, t0: u32, lk: u32, inv: u32) {
    for (var i = inv; i < TK * D4; i += ROWS) {
        let t = t0 + i / D4;
        let c = h * D4 + i % D4;
        var kv = vec4<f32>(0.0);
        var vv = vec4<f32>(0.0);
        if (t < p.l1) {
            let r = (b * p.l1 + t) * p.kv1_stride / 4u + c;
            kv = kv1[r + p.k1_off / 4u];
            vv = kv1[r + p.v1_off / 4u];
        } else if (t < lk) {
            let r = (b * p.l2 + t - p.l1) * p.kv2_stride / 4u + c;
            kv = kv2[r + p.k2_off / 4u];
            vv = kv2[r + p.v2_off / 4u];
        }
        ks[i] = kv;
        vs[i] = vv;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) inv: u32) {
    let row = wid.x * ROWS + inv;
    let h = wid.y;
    let b = wid.z;
    // Rows past the end compute a copy of the last row (every invocation stages) and store
    // nothing.
    let qrow = min(row, p.lq - 1u);
    let qb = ((b * p.lq + qrow) * p.q_stride + p.q_off) / 4u + h * D4;
    var qv: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    for (var j = 0u; j < D4; j++) {
        qv[j] = q[qb + j] * p.scale;
    }
    var run_max = -3.0e38;
    var run_sum = 0.0;
    let lk = p.l1 + p.l2;
    for (var t0 = 0u; t0 < lk; t0 += TK) {
        stage(b, h, t0, lk, inv);
        workgroupBarrier();
        var s: array<f32, TK>;
        var m = run_max;
        for (var t = 0u; t < TK; t++) {
            var d = vec4<f32>(0.0);
            for (var j = 0u; j < D4; j++) {
                d += qv[j] * ks[t * D4 + j];
            }
            // Keys past the end and causally hidden ones score -3e38: no part in the
            // maximum, weight exp(..) = 0.
            var sc = d.x + d.y + d.z + d.w;
            if (BIAS != 0u) {
                sc += bias[(h * p.lq + qrow) * lk + min(t0 + t, lk - 1u)];
            }
            let hidden = CAUSAL != 0u && t0 + t > qrow;
            s[t] = select(-3.0e38, sc, t0 + t < lk && !hidden);
            m = max(m, s[t]);
        }
        let correction = exp(run_max - m);
        run_sum *= correction;
        for (var j = 0u; j < D4; j++) {
            acc[j] *= correction;
        }
        for (var t = 0u; t < TK; t++) {
            let e = exp(s[t] - m);
            run_sum += e;
            for (var j = 0u; j < D4; j++) {
                acc[j] += e * vs[t * D4 + j];
            }
        }
        run_max = m;
        workgroupBarrier();
    }
    if (row < p.lq) {
        let ob = (b * p.lq + row) * p.heads * D4 + h * D4;
        let inv_sum = 1.0 / run_sum;
        for (var j = 0u; j < D4; j++) {
            o[ob + j] = acc[j] * inv_sum;
        }
    }
}
