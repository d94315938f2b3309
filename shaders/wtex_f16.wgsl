// Weight texture of f16 weights for linear_texture.wgsl (its binding 2): rgba16float, four k per
// texel, which the texture load widens to f32.
@group(0) @binding(2) var wt: texture_storage_2d<rgba16float, read>;

fn w_texel(v: vec4<f32>) -> vec4<f32> {
    return v;
}
