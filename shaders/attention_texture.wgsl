// Fused attention for software adapters: keys and values are read from read-only rgba32float
// storage textures (packed by pack_texture.wgsl: row b * lk + t, head h at texels h * D4 ..),
// which llvmpipe loads vectorised, and each invocation carries eight queries (two groups of
// four, a and b, whose scores, maxima and sums are vec4s) so every loaded key or value texel
// feeds eight dot products: 1.2-1.7x faster than four queries on lavapipe (L = 1024 and 4429,
// head dims 64 and 128). Online softmax as in attention.wgsl; no L x L matrix.
// D4 (head dim / 4) is defined by the op before this file: exact-size private arrays and
// constant loop bounds let the compiler unroll them.

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

// Base index (vec4 units) of query row `row` of this invocation's head.
fn query_base(gb: u32, row: u32, h: u32) -> u32 {
    return ((gb * p.lq + min(row, p.lq - 1u)) * p.q_stride + p.q_off) / 4u + h * D4;
}

fn store(gb: u32, row: u32, h: u32, j: u32, v: vec4<f32>) {
    if (row < p.lq) {
        o[(gb * p.lq + row) * p.heads * D4 + h * D4 + j] = v;
    }
}

@compute @workgroup_size(16, 4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.x * 8u;
    let h = gid.y;
    let b = gid.z;
    if (row0 >= p.lq || h >= p.heads) {
        return;
    }
    let gb = p.batch0 + b;
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
    var run_max_a = vec4<f32>(-3.0e38);
    var run_sum_a = vec4<f32>(0.0);
    var run_max_b = vec4<f32>(-3.0e38);
    var run_sum_b = vec4<f32>(0.0);
    let col0 = h * D4;
    for (var t = 0u; t < p.lk; t++) {
        let r = b * p.lk + t;
        var sa = vec4<f32>(0.0);
        var sb = vec4<f32>(0.0);
        for (var j = 0u; j < D4; j++) {
            let kv = textureLoad(kt, vec2<u32>(col0 + j, r));
            sa += vec4<f32>(dot(q0[j], kv), dot(q1[j], kv), dot(q2[j], kv), dot(q3[j], kv));
            sb += vec4<f32>(dot(q4[j], kv), dot(q5[j], kv), dot(q6[j], kv), dot(q7[j], kv));
        }
        let ma = max(run_max_a, sa);
        let ca = exp(run_max_a - ma);
        let ea = exp(sa - ma);
        run_sum_a = run_sum_a * ca + ea;
        run_max_a = ma;
        let mb = max(run_max_b, sb);
        let cb = exp(run_max_b - mb);
        let eb = exp(sb - mb);
        run_sum_b = run_sum_b * cb + eb;
        run_max_b = mb;
        for (var j = 0u; j < D4; j++) {
            let vv = textureLoad(vt, vec2<u32>(col0 + j, r));
            acc0[j] = acc0[j] * ca.x + ea.x * vv;
            acc1[j] = acc1[j] * ca.y + ea.y * vv;
            acc2[j] = acc2[j] * ca.z + ea.z * vv;
            acc3[j] = acc3[j] * ca.w + ea.w * vv;
            acc4[j] = acc4[j] * cb.x + eb.x * vv;
            acc5[j] = acc5[j] * cb.y + eb.y * vv;
            acc6[j] = acc6[j] * cb.z + eb.z * vv;
            acc7[j] = acc7[j] * cb.w + eb.w * vv;
        }
    }
    let inv_a = 1.0 / run_sum_a;
    let inv_b = 1.0 / run_sum_b;
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
