// Operands, output and per-invocation state of the texture attention kernels
// (attention_texture.wgsl and attention_texture_subgroup.wgsl, composed after this): queries
// from a storage buffer, keys and values from read-only rgba32float storage textures (packed
// by pack_texture.wgsl: row b * lk + t, head h at texels h * D4 ..), eight queries per
// invocation. D4 (head dim / 4) is defined by the op before this file: exact-size private
// arrays and constant loop bounds let the compiler unroll them. So are the score switches
// CAUSAL and BIAS (see adjust()).

struct Params {
    heads: u32,
    scale: f32,
    lq: u32,
    q_stride: u32,
    q_off: u32,
    lk: u32,
    // First batch row of this dispatch in the query and output buffers.
    batch0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var kt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var vt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

var<private> q0: array<vec4<f32>, D4>;
var<private> q1: array<vec4<f32>, D4>;
var<private> q2: array<vec4<f32>, D4>;
var<private> q3: array<vec4<f32>, D4>;
var<private> q4: array<vec4<f32>, D4>;
var<private> q5: array<vec4<f32>, D4>;
var<private> q6: array<vec4<f32>, D4>;
var<private> q7: array<vec4<f32>, D4>;
var<private> acc0: array<vec4<f32>, D4>;
var<private> acc1: array<vec4<f32>, D4>;
var<private> acc2: array<vec4<f32>, D4>;
var<private> acc3: array<vec4<f32>, D4>;
var<private> acc4: array<vec4<f32>, D4>;
var<private> acc5: array<vec4<f32>, D4>;
var<private> acc6: array<vec4<f32>, D4>;
var<private> acc7: array<vec4<f32>, D4>;

// Base index (vec4 units) of query row `row` (clamped to the last) of head h.
fn query_base(gb: u32, row: u32, h: u32) -> u32 {
    return ((gb * p.lq + min(row, p.lq - 1u)) * p.q_stride + p.q_off) / 4u + h * D4;
}

// Load the scaled queries of rows row0 .. row0 + 7 of head h into q0 .. q7 and clear their
// accumulators.
fn load_queries(gb: u32, row0: u32, h: u32) {
    let qb0 = query_base(gb, row0 + 0u, h);
    let qb1 = query_base(gb, row0 + 1u, h);
    let qb2 = query_base(gb, row0 + 2u, h);
    let qb3 = query_base(gb, row0 + 3u, h);
    let qb4 = query_base(gb, row0 + 4u, h);
    let qb5 = query_base(gb, row0 + 5u, h);
    let qb6 = query_base(gb, row0 + 6u, h);
    let qb7 = query_base(gb, row0 + 7u, h);
    for (var j = 0u; j < D4; j++) {
        q0[j] = q[qb0 + j] * p.scale;
        acc0[j] = vec4<f32>(0.0);
        q1[j] = q[qb1 + j] * p.scale;
        acc1[j] = vec4<f32>(0.0);
        q2[j] = q[qb2 + j] * p.scale;
        acc2[j] = vec4<f32>(0.0);
        q3[j] = q[qb3 + j] * p.scale;
        acc3[j] = vec4<f32>(0.0);
        q4[j] = q[qb4 + j] * p.scale;
        acc4[j] = vec4<f32>(0.0);
        q5[j] = q[qb5 + j] * p.scale;
        acc5[j] = vec4<f32>(0.0);
        q6[j] = q[qb6 + j] * p.scale;
        acc6[j] = vec4<f32>(0.0);
        q7[j] = q[qb7 + j] * p.scale;
        acc7[j] = vec4<f32>(0.0);
    }
}

fn store(gb: u32, row: u32, h: u32, j: u32, v: vec4<f32>) {
    if (row < p.lq) {
        o[(gb * p.lq + row) * p.heads * D4 + h * D4 + j] = v;
    }
}

// Write rows row0 .. row0 + 7 (those within p.lq): the accumulators over their softmax sums,
// sum_a for rows 0-3 and sum_b for rows 4-7.
fn store_outputs(gb: u32, row0: u32, h: u32, sum_a: vec4<f32>, sum_b: vec4<f32>) {
    let inv_a = 1.0 / sum_a;
    let inv_b = 1.0 / sum_b;
    for (var j = 0u; j < D4; j++) {
        store(gb, row0 + 0u, h, j, acc0[j] * inv_a.x);
        store(gb, row0 + 1u, h, j, acc1[j] * inv_a.y);
        store(gb, row0 + 2u, h, j, acc2[j] * inv_a.z);
        store(gb, row0 + 3u, h, j, acc3[j] * inv_a.w);
        store(gb, row0 + 4u, h, j, acc4[j] * inv_b.x);
        store(gb, row0 + 5u, h, j, acc5[j] * inv_b.y);
        store(gb, row0 + 6u, h, j, acc6[j] * inv_b.z);
        store(gb, row0 + 7u, h, j, acc7[j] * inv_b.w);
    }
}

// Scores of key `key` for query rows row .. row + 3 of head h, adjusted: with BIAS, plus the
// [heads, lq, lk] table (T5's relative position bias; rows and keys past the end read clamped);
// with CAUSAL, -3e38 (weight 0) where the key lies after the query (CLIP's mask). Key 0 is
// visible to every query, so the first block gives every running maximum a real score.
fn adjust(s: vec4<f32>, row: u32, h: u32, key: u32) -> vec4<f32> {
    var out = s;
    if (BIAS != 0u) {
        let k = min(key, p.lk - 1u);
        let r = min(vec4<u32>(row) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.lq - 1u));
        out += vec4<f32>(
            bias[(h * p.lq + r.x) * p.lk + k],
            bias[(h * p.lq + r.y) * p.lk + k],
            bias[(h * p.lq + r.z) * p.lk + k],
            bias[(h * p.lq + r.w) * p.lk + k],
        );
    }
    if (CAUSAL != 0u) {
        let rows = vec4<u32>(row) + vec4<u32>(0u, 1u, 2u, 3u);
        out = select(out, vec4<f32>(-3.0e38), vec4<u32>(key) > rows);
    }
    return out;
}
