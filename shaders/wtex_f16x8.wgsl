// Weight texels of f16 weights packed eight per rgba32uint texel, two per u32 (the first in the
// low half), for linear_texture_k8.wgsl (its binding 2): one load brings eight k where rgba16float
// brings four.
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;

// The eight weights of step k of the row whose first texel is at `origin`, four per column.
fn w_step(k: u32, origin: vec2<u32>) -> mat2x4<f32> {
    let v = textureLoad(wt, vec2<u32>(k * p.interleave, 0u) + origin);
    return mat2x4<f32>(
        vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)),
        vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)),
    );
}
