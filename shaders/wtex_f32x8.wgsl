// Weight texels of f32 weights, four k per rgba32float texel, read two texels per step by
// linear_texture_k8.wgsl (its binding 2) when K is a multiple of 8, so that each accumulator
// takes eight k in one update.
@group(0) @binding(2) var wt: texture_storage_2d<rgba32float, read>;

// The eight weights of step k of the row whose first texel is at `origin`, four per column:
// texels 2k and 2k + 1 of the row, `interleave` apart along x.
fn w_step(k: u32, origin: vec2<u32>) -> mat2x4<f32> {
    let at = vec2<u32>(2u * k * p.interleave, 0u) + origin;
    return mat2x4<f32>(textureLoad(wt, at), textureLoad(wt, at + vec2<u32>(p.interleave, 0u)));
}
