//! Matrix: a weight matrix [N, K] in its stored dtype, laid out for the adapter's matmul.
//!
//! On hardware GPUs it is a storage buffer (`linear.wgsl`, `linear_tiled.wgsl`). On software
//! adapters it lives in textures of up to `max_texture_dimension_2d` rows, read as read-only
//! storage textures, with the stored bytes: rgba32float texels of four k for f32; for f16 and
//! bf16 rgba32uint texels of eight k when K is a multiple of 8 (half the loads per weight),
//! else rgba16float or rgba16uint (bf16 bits) texels of four; eight matrix rows interleaved
//! per texture row where the width allows (`write_interleaved`). llvmpipe vectorises texel
//! loads but not buffer loads, which makes `linear_texture*.wgsl` several times faster there.
//! Either way each weight is uploaded once, 2 bytes per parameter for f16/bf16.

use std::ops::Range;

use crate::context::{Gpu, texture_side};
use crate::error::{KernelError, Result, shape_err};
use crate::pool::Pool;
use crate::tensor::{DType, Tensor};

/// Which layout to use; `Auto` picks textures on software adapters when K allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixLayout {
    Auto,
    Buffer,
    Texture,
}

/// One texture holding rows `rows` of the matrix.
pub(crate) struct TextureChunk {
    pub rows: Range<usize>,
    pub view: wgpu::TextureView,
    texture: wgpu::Texture,
    bytes: u64,
    stats: Pool,
}

impl Drop for TextureChunk {
    fn drop(&mut self) {
        self.stats.note_freed(self.bytes);
    }
}

pub(crate) enum Store {
    Buffer(Tensor),
    /// Texture chunks of up to `max_texture_dimension_2d` texture rows, each holding
    /// `interleave` matrix rows (see `write_interleaved`).
    Textures {
        chunks: Vec<TextureChunk>,
        interleave: usize,
    },
}

pub struct Matrix {
    n: usize,
    k: usize,
    dtype: DType,
    pub(crate) store: Store,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layout = match self.store {
            Store::Buffer(_) => "buffer",
            Store::Textures { .. } => "texture",
        };
        write!(
            f,
            "Matrix([{}, {}], {}, {layout})",
            self.n, self.k, self.dtype
        )
    }
}

/// Weights per texel of a K-wide matrix of `dtype` stored as textures: 8 for f16 and bf16
/// when K allows, else 4.
pub(crate) fn texel_k(dtype: DType, k: usize) -> usize {
    if dtype != DType::F32 && k.is_multiple_of(8) {
        8
    } else {
        4
    }
}

/// Matrix rows per texture row (the kernel's `interleave`): 8, so that the eight lanes of a SIMD
/// vector load adjacent texels, where the texture can be 8x wider; else 1, the plain layout.
fn interleave(texels: usize, max_dim: usize) -> usize {
    if 8 * texels <= max_dim { 8 } else { 1 }
}

/// Write `chunk`'s rows, taken from `source`, in the interleaved layout: texel t of row r at
/// (group t + r % group, r / group), rows past the end zero. Staged a few hundred KiB at a time,
/// so no second copy of the matrix is held in host memory.
fn write_interleaved<'a>(
    gpu: &Gpu,
    chunk: &TextureChunk,
    source: &mut impl Iterator<Item = &'a [u8]>,
    row_bytes: usize,
    texels: usize,
    group: usize,
) -> Result<()> {
    let texel_bytes = row_bytes / texels;
    let height = chunk.rows.len().div_ceil(group);
    let per_write = ((256 << 10) / (row_bytes * group)).max(1);
    let mut staged = Vec::new();
    for first in (0..height).step_by(per_write) {
        let count = per_write.min(height - first);
        staged.clear();
        staged.resize(count * group * row_bytes, 0);
        for (i, row) in source.by_ref().take(count * group).enumerate() {
            let (line, r) = (i / group, i % group);
            for (t, texel) in row.chunks_exact(texel_bytes).enumerate() {
                let at = ((line * texels + t) * group + r) * texel_bytes;
                staged[at..at + texel_bytes].copy_from_slice(texel);
            }
        }
        gpu.queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &chunk.texture,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: 0,
                    y: first as u32,
                    z: 0,
                },
                aspect: wgpu::TextureAspect::All,
            },
            &staged,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some((group * row_bytes) as u32),
                rows_per_image: None,
            },
            wgpu::Extent3d {
                width: (texels * group) as u32,
                height: count as u32,
                depth_or_array_layers: 1,
            },
        );
        gpu.note_upload(staged.len() as u64)?;
    }
    Ok(())
}

fn texture_format(dtype: DType, texel_k: usize) -> wgpu::TextureFormat {
    match (dtype, texel_k) {
        (DType::F32, _) => wgpu::TextureFormat::Rgba32Float,
        (_, 8) => wgpu::TextureFormat::Rgba32Uint,
        (DType::F16, _) => wgpu::TextureFormat::Rgba16Float,
        (DType::BF16, _) => wgpu::TextureFormat::Rgba16Uint,
    }
}

impl Matrix {
    /// Whether `layout` resolves to textures for a K-wide matrix on this adapter.
    fn wants_texture(gpu: &Gpu, k: usize, layout: MatrixLayout) -> Result<bool> {
        let fits =
            k.is_multiple_of(4) && k / 4 <= gpu.limits.max_texture_dimension_2d as usize && k > 0;
        match layout {
            MatrixLayout::Buffer => Ok(false),
            MatrixLayout::Auto => Ok(gpu.caps.software && fits),
            MatrixLayout::Texture if fits => Ok(true),
            MatrixLayout::Texture => shape_err(
                "matrix",
                format!(
                    "K = {k} cannot be a texture (needs a multiple of 4 up to {})",
                    4 * gpu.limits.max_texture_dimension_2d
                ),
            ),
        }
    }

    /// Upload [N, K] from its stored bytes, given as consecutive row blocks (q, k, v stacked).
    pub fn upload(
        gpu: &Gpu,
        n: usize,
        k: usize,
        dtype: DType,
        parts: &[&[u8]],
        layout: MatrixLayout,
    ) -> Result<Matrix> {
        let row_bytes = k * dtype.size();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total != n * row_bytes || parts.iter().any(|p| p.len() % row_bytes.max(1) != 0) {
            return shape_err(
                "matrix",
                format!(
                    "[{n}, {k}] {dtype} needs whole rows, {} bytes; got parts of {total} bytes",
                    n * row_bytes
                ),
            );
        }
        if !Matrix::wants_texture(gpu, k, layout)? {
            let t = Tensor::from_raw_parts(gpu, &[n, k], dtype, parts)?;
            return Ok(Matrix {
                n,
                k,
                dtype,
                store: Store::Buffer(t),
            });
        }
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        let per_texel = texel_k(dtype, k);
        let format = texture_format(dtype, per_texel);
        let texels = k / per_texel;
        let group = interleave(texels, max_dim);
        let mut chunks = Vec::new();
        for start in (0..n).step_by(max_dim * group) {
            let rows = start..(start + max_dim * group).min(n);
            let size = wgpu::Extent3d {
                width: texture_side((texels * group) as u32, max_dim as u32),
                height: texture_side(rows.len().div_ceil(group) as u32, max_dim as u32),
                depth_or_array_layers: 1,
            };
            let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("weight"),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(KernelError::Device(format!(
                    "out of device memory for a [{n}, {k}] weight texture: {e}"
                )));
            }
            let bytes = (rows.len() * row_bytes) as u64;
            gpu.pool.note_new(bytes);
            chunks.push(TextureChunk {
                rows,
                view: texture.create_view(&Default::default()),
                texture,
                bytes,
                stats: gpu.pool.clone(),
            });
        }
        let mut source = parts.iter().flat_map(|p| p.chunks_exact(row_bytes));
        for chunk in &chunks {
            write_interleaved(gpu, chunk, &mut source, row_bytes, texels, group)?;
        }
        Ok(Matrix {
            n,
            k,
            dtype,
            store: Store::Textures {
                chunks,
                interleave: group,
            },
        })
    }

    /// An f32 activation [N, K] on the device used as the weight of a matmul (attention
    /// scores as x K^T, outputs as P V with V stored [D, L]), in its buffer: no copy.
    pub fn from_tensor(t: Tensor) -> Result<Matrix> {
        let [n, k] = *t.shape() else {
            return shape_err("matrix", format!("{:?} is not [N, K]", t.shape()));
        };
        if t.dtype() != DType::F32 {
            return shape_err(
                "matrix",
                format!("an activation matrix is f32, not {}", t.dtype()),
            );
        }
        Ok(Matrix {
            n,
            k,
            dtype: DType::F32,
            store: Store::Buffer(t),
        })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn is_texture(&self) -> bool {
        matches!(self.store, Store::Textures { .. })
    }
}
