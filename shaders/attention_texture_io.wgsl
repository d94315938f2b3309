// Operands, output and per-invocation state of the texture attention kernels
// (attention_texture.wgsl and attention_texture_subgroup.wgsl, composed after this): queries
// from a storage buffer, keys and values from read-only rgba32float storage textures (packed
// by pack_texture.wgsl: row b * lk + t, head h at texels h * D4 ..), eight queries per
// invocation. D4 (head dim / 4) is defined by the op before this file: exact-size private
// arrays and constant loop bounds let the compiler unroll them.

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
