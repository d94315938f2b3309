// Weight texture of f32 weights for linear_texture.wgsl (its binding 2): rgba32float, four k per
// texel.
@group(0) @binding(2) var wt: texture_storage_2d<rgba32float, read>;

fn w_texel(v: vec4<f32>) -> vec4<f32> {
    return v;
}
