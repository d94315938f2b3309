// Weight texture of bf16 weights for linear_texture.wgsl (its binding 2): raw bits in
// rgba16uint, four k per texel. bf16 is the top half of an f32.
@group(0) @binding(2) var wt: texture_storage_2d<rgba16uint, read>;

fn w_texel(v: vec4<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(v << vec4<u32>(16u));
}
