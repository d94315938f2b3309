// Input of a kernel that reads x by flat Elem index, through a read-only rgba32float storage
// texture of FLAT_WIDTH texels per row (pack.rs flat_texture; the op defines FLAT_WIDTH)
// holding the vec4s from the kernel's `p.elem0` on. For software adapters: llvmpipe loads
// texels vectorised but splits every buffer load into a per-lane loop (see rows_in_texture.wgsl).
@group(0) @binding(1) var xt: texture_storage_2d<rgba32float, read>;

fn x_flat(i: u32) -> Elem {
    let j = i - p.elem0;
    return textureLoad(xt, vec2<u32>(j % FLAT_WIDTH, j / FLAT_WIDTH));
}
