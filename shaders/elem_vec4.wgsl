// Element type of the row kernels for rows whose width is a multiple of 4 (every model's):
// one vec4 per access, a quarter of the accesses (llvmpipe splits each buffer access into a
// per-lane loop, whatever its width).
alias Elem = vec4<f32>;

fn hsum(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

fn lane0(v: vec4<f32>) -> f32 {
    return v.x;
}
