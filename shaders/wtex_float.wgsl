// Weight texels of float formats (rgba32float for f32 weights, rgba16float for f16): the
// texture unit already widens them to f32.
alias WTexel = f32;

fn w_texel(v: vec4<f32>) -> vec4<f32> {
    return v;
}
