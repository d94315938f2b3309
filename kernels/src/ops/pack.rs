//! Packing f32 rows into the rgba32float scratch textures that the texture kernels read
//! (software adapters): four columns per texel, rows regrouped per sample.

use crate::context::{Bind, Gpu, Scratch};
use crate::error::Result;
use crate::ops::{grid_flat, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::Tensor;

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

/// Whether `p` can be done by copies instead of the pack kernel: source rows a multiple of 256
/// bytes apart (every real model width) and columns starting on a texel (16 bytes). Copies were
/// faster on lavapipe (attention over 397 tokens: 9 %).
pub(crate) fn copyable(p: &PackRows) -> bool {
    (p.stride * 4).is_multiple_of(256) && p.col_off.is_multiple_of(4)
}

/// Record `p` (which must be [`copyable`]) as one copy per sample's block of rows from
/// `buffer`, whose source row 0 starts `base` bytes in, into `texture`.
pub(crate) fn copy_rows(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    base: u64,
    texture: &wgpu::Texture,
    p: &PackRows,
) {
    if p.rows == 0 {
        return;
    }
    for b in 0..p.rows / p.rows_per_batch {
        let first = p.src_row0 + b * p.rows_per_batch;
        gpu.copy_to_texture(
            buffer,
            base + ((first * p.stride + p.col_off) * 4) as u64,
            (p.stride * 4) as u32,
            [p.texels as u32, p.rows_per_batch as u32],
            (b * p.dst_rows_per_batch + p.dst_row_off) as u32,
            texture,
        );
    }
}

/// Put rows `rows` of x [M, K] into the input scratch texture (K/4 texels wide) for the texture
/// kernels: a plain copy when rows are a multiple of 256 bytes (every real model width), else
/// the pack kernel (`name` says which op it serves).
pub(crate) fn rows_texture(
    gpu: &Gpu,
    name: &'static str,
    x: &Tensor,
    k: usize,
    rows: std::ops::Range<usize>,
) -> Result<wgpu::TextureView> {
    let mc = rows.len();
    let texels = k / 4;
    let offset = (rows.start * k * 4) as u64;
    let p = PackRows {
        texels,
        rows: mc,
        stride: k,
        col_off: 0,
        rows_per_batch: mc,
        dst_rows_per_batch: mc,
        dst_row_off: 0,
        src_row0: 0,
    };
    if copyable(&p) {
        let (tex, view) = gpu.scratch_texture(Scratch::Copied, texels as u32, mc as u32)?;
        copy_rows(gpu, x.buffer(), offset, &tex, &p);
        return Ok(view);
    }
    let (_, view) = gpu.scratch_texture(Scratch::Packed, texels as u32, mc as u32)?;
    pack_rows(
        gpu,
        name,
        x.bind_range("x", offset, (mc * k * 4) as u64),
        &view,
        p,
    )?;
    Ok(view)
}

/// Texels per row of the flat input texture (flat_in_texture.wgsl's FLAT_WIDTH): 4096, or the
/// device's texture width limit if lower, in multiples of 16 (rows of a multi-row copy must
/// be 256 bytes apart); 0 where the limit is below 16.
pub(crate) fn flat_width(gpu: &Gpu) -> usize {
    (gpu.limits.max_texture_dimension_2d as usize).min(4096) / 16 * 16
}

/// Put vec4s `span` of x (flat, in vec4 units) into the flat scratch texture, flat_width
/// texels per row, for kernels that read through flat_in_texture.wgsl.
pub(crate) fn flat_texture(
    gpu: &Gpu,
    x: &Tensor,
    span: std::ops::Range<usize>,
) -> Result<wgpu::TextureView> {
    let width = flat_width(gpu);
    let (full, rest) = (span.len() / width, span.len() % width);
    let height = full + usize::from(rest > 0);
    let (tex, view) = gpu.scratch_texture(Scratch::Flat, width as u32, height as u32)?;
    let offset = (span.start * 16) as u64;
    let row_bytes = (width * 16) as u32;
    if full > 0 {
        let size = [width as u32, full as u32];
        gpu.copy_to_texture(x.buffer(), offset, row_bytes, size, 0, &tex);
    }
    if rest > 0 {
        let at = offset + u64::from(row_bytes) * full as u64;
        gpu.copy_to_texture(
            x.buffer(),
            at,
            row_bytes,
            [rest as u32, 1],
            full as u32,
            &tex,
        );
    }
    Ok(view)
}
