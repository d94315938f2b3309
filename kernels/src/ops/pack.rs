//! Packing f32 rows into the rgba32float scratch textures that the texture kernels read
//! (software adapters): four columns per texel, rows regrouped per sample.

use crate::context::{Bind, Gpu};
use crate::error::Result;
use crate::ops::{grid_flat, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;

/// Which rows go where (see pack_texture.wgsl).
pub(crate) struct PackRows {
    /// Texels per row (columns / 4).
    pub texels: usize,
    /// Source rows to pack.
    pub rows: usize,
    /// Source row stride and first column, in floats (multiples of 4).
    pub stride: usize,
    pub col_off: usize,
    /// Source rows per sample, texture rows per sample, and the offset within a sample's block.
    pub rows_per_batch: usize,
    pub dst_rows_per_batch: usize,
    pub dst_row_off: usize,
    /// First source row (the binding covers the whole source).
    pub src_row0: usize,
}

/// Record the pack; `name` is what the profiler calls it (the op it serves).
pub(crate) fn pack_rows(
    gpu: &Gpu,
    name: &'static str,
    src: Bind<'_>,
    dst: &wgpu::TextureView,
    p: PackRows,
) -> Result<()> {
    let params = [
        p.texels as u32,
        p.rows as u32,
        (p.stride / 4) as u32,
        (p.col_off / 4) as u32,
        p.rows_per_batch as u32,
        p.dst_rows_per_batch as u32,
        p.dst_row_off as u32,
        p.src_row0 as u32,
    ];
    gpu.dispatch(
        &Kernel::new(name, &["common.wgsl", "pack_texture.wgsl"]),
        words(&params),
        &[src, Bind::Texture(dst)],
        grid_flat(gpu, p.texels * p.rows),
        Cost::new(0.0, 32.0 * (p.texels * p.rows) as f64),
    )
}
