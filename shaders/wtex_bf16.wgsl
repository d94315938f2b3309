// Weight texels of bf16 weights, stored as raw bits in rgba16uint: bf16 is the top half of an f32.
alias WTexel = u32;

fn w_texel(v: vec4<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(v << vec4<u32>(16u));
}
