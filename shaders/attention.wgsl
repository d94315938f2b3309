// Fused attention softmax(q k^T * scale) v with an online softmax: no L x L matrix is stored.
// One invocation per (query row, head, sample). Keys and values come from one or two sources
// (two streams attended as one concatenated sequence without copying them together); every
// operand is addressed as rows with a stride and a column offset, so q, k and v can be read
// straight out of fused qkv activations. Head dim: a multiple of 4 up to 128.

const MAX_D4: u32 = 32u;

struct Params {
    batch: u32,
    heads: u32,
    d4: u32,
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

var<private> qv: array<vec4<f32>, MAX_D4>;
var<private> acc: array<vec4<f32>, MAX_D4>;
var<private> run_max: f32;
var<private> run_sum: f32;

fn load_kv(src: u32, i: u32) -> vec4<f32> {
    if (src == 1u) {
        return kv1[i];
    }
    return kv2[i];
}

// Fold key/value row (k at kb, v at vb, in vec4 units) into the running softmax.
fn attend(kb: u32, vb: u32, src: u32) {
    var s = 0.0;
    for (var j = 0u; j < p.d4; j++) {
        s += dot(qv[j], load_kv(src, kb + j));
    }
    s *= p.scale;
    let m = max(run_max, s);
    let correction = exp(run_max - m);
    let e = exp(s - m);
    run_sum = run_sum * correction + e;
    run_max = m;
    for (var j = 0u; j < p.d4; j++) {
        acc[j] = acc[j] * correction + e * load_kv(src, vb + j);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    let h = gid.y;
    let b = gid.z;
    if (row >= p.lq) {
        return;
    }
    let qb = ((b * p.lq + row) * p.q_stride + p.q_off) / 4u + h * p.d4;
    for (var j = 0u; j < p.d4; j++) {
        qv[j] = q[qb + j];
        acc[j] = vec4<f32>(0.0);
    }
    run_max = -3.0e38;
    run_sum = 0.0;
    for (var t = 0u; t < p.l1; t++) {
        let r = ((b * p.l1 + t) * p.kv1_stride) / 4u + h * p.d4;
        attend(r + p.k1_off / 4u, r + p.v1_off / 4u, 1u);
    }
    for (var t = 0u; t < p.l2; t++) {
        let r = ((b * p.l2 + t) * p.kv2_stride) / 4u + h * p.d4;
        attend(r + p.k2_off / 4u, r + p.v2_off / 4u, 2u);
    }
    let ob = (b * p.lq + row) * p.heads * p.d4 + h * p.d4;
    let inv = 1.0 / run_sum;
    for (var j = 0u; j < p.d4; j++) {
        o[ob + j] = acc[j] * inv;
    }
}
