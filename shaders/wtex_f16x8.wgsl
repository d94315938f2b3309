// Weight texels of f16 weights packed eight per rgba32uint texel, two per u32 (the first in the
// low half), for linear_texture_k8.wgsl (its binding 2): one load brings eight k where rgba16float
// brings four.
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;

fn w_lo(v: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
}

fn w_hi(v: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
}
