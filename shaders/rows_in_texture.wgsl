// Input rows of a row kernel through a read-only rgba32float storage texture, one vec4 Elem
// per texel (pack.rs rows_texture), holding the rows from the kernel's `p.row0` on. For
// software adapters: Mesa's llvmpipe loads texels vectorised but splits every buffer load into
// a per-lane loop, so LayerNorm, which reads each row twice, runs about twice as fast this way.
@group(0) @binding(1) var xt: texture_storage_2d<rgba32float, read>;

fn x_at(row: u32, i: u32) -> Elem {
    return textureLoad(xt, vec2<u32>(i, row - p.row0));
}
