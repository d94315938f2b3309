// Weight texels of bf16 weights packed eight per rgba32uint texel, two per u32 (the first in the
// low half), for linear_texture_k8.wgsl (its binding 2). bf16 is the top half of an f32.
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;

fn bf16_pair(u: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
}

// The eight weights of step k of the row whose first texel is at `origin`, four per column.
fn w_step(k: u32, origin: vec2<u32>) -> mat2x4<f32> {
    let v = textureLoad(wt, vec2<u32>(k * p.interleave, 0u) + origin);
    return mat2x4<f32>(
        vec4<f32>(bf16_pair(v.x), bf16_pair(v.y)),
        vec4<f32>(bf16_pair(v.z), bf16_pair(v.w)),
    );
}
