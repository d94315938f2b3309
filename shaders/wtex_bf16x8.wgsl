// Weight texels of bf16 weights packed eight per rgba32uint texel, two per u32 (the first in the
// low half), for linear_texture_k8.wgsl (its binding 2). bf16 is the top half of an f32.
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;

fn bf16_pair(u: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
}

fn w_lo(v: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(bf16_pair(v.x), bf16_pair(v.y));
}

fn w_hi(v: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(bf16_pair(v.z), bf16_pair(v.w));
}
