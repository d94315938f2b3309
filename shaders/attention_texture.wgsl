// Fused attention for software adapters: keys and values are read from rgba32float textures
// (packed by pack_texture.wgsl: row b * lk + t, head h at texels h * D4 ..), which llvmpipe
// fetches vectorised, and each invocation carries four queries so every fetched key or value
// texel feeds four dot products. Online softmax as in attention.wgsl; no L x L matrix.
// D4 (head dim / 4) is defined by the op before this file: exact-size private arrays and
// constant loop bounds let the compiler unroll and keep everything in registers.

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
@group(0) @binding(2) var kt: texture_2d<f32>;
@group(0) @binding(3) var vt: texture_2d<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;

var<private> q0: array<vec4<f32>, D4>;
var<private> q1: array<vec4<f32>, D4>;
var<private> q2: array<vec4<f32>, D4>;
var<private> q3: array<vec4<f32>, D4>;
var<private> acc0: array<vec4<f32>, D4>;
var<private> acc1: array<vec4<f32>, D4>;
var<private> acc2: array<vec4<f32>, D4>;
var<private> acc3: array<vec4<f32>, D4>;

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
    let row0 = gid.x * 4u;
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
    for (var j = 0u; j < D4; j++) {
        q0[j] = q[qb0 + j] * p.scale;
        acc0[j] = vec4<f32>(0.0);
        q1[j] = q[qb1 + j] * p.scale;
        acc1[j] = vec4<f32>(0.0);
        q2[j] = q[qb2 + j] * p.scale;
        acc2[j] = vec4<f32>(0.0);
        q3[j] = q[qb3 + j] * p.scale;
        acc3[j] = vec4<f32>(0.0);
    }
    var run_max = vec4<f32>(-3.0e38);
    var run_sum = vec4<f32>(0.0);
    let col0 = h * D4;
    for (var t = 0u; t < p.lk; t++) {
        let r = b * p.lk + t;
        var s = vec4<f32>(0.0);
        for (var j = 0u; j < D4; j++) {
            let kv = textureLoad(kt, vec2<u32>(col0 + j, r), 0);
            s += vec4<f32>(dot(q0[j], kv), dot(q1[j], kv), dot(q2[j], kv), dot(q3[j], kv));
        }
        let m = max(run_max, s);
        let correction = exp(run_max - m);
        let e = exp(s - m);
        run_sum = run_sum * correction + e;
        run_max = m;
        for (var j = 0u; j < D4; j++) {
            let vv = textureLoad(vt, vec2<u32>(col0 + j, r), 0);
            acc0[j] = acc0[j] * correction.x + e.x * vv;
            acc1[j] = acc1[j] * correction.y + e.y * vv;
            acc2[j] = acc2[j] * correction.z + e.z * vv;
            acc3[j] = acc3[j] * correction.w + e.w * vv;
        }
    }
    let inv = 1.0 / run_sum;
    for (var j = 0u; j < D4; j++) {
        store(gb, row0 + 0u, h, j, acc0[j] * inv.x);
        store(gb, row0 + 1u, h, j, acc1[j] * inv.y);
        store(gb, row0 + 2u, h, j, acc2[j] * inv.z);
        store(gb, row0 + 3u, h, j, acc3[j] * inv.w);
    }
}
