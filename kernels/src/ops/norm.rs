//! LayerNorm (optionally affine, optionally fused with adaLN modulation), RMSNorm over head
//! segments in place, GroupNorm with a fused activation.

use crate::context::{Bind, Gpu};
use crate::error::{KernelError, Result, shape_err};
use crate::ops::pack::{flat_texture, flat_width, rows_texture};
use crate::ops::{Act, chunks_max, elem_width, expect_f32, grid_flat, reduction_width, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// adaLN modulation source: chunks of a per-sample row [B, k * D] shared by `tokens` rows.
#[derive(Clone, Copy)]
pub struct Modulation<'a> {
    pub table: &'a Tensor,
    /// Rows of x per sample.
    pub tokens: usize,
    /// Chunk indices (in units of D) of shift and scale.
    pub shift: usize,
    pub scale: usize,
}

impl Modulation<'_> {
    /// Check the table against x [rows, d]; returns the table's row stride.
    pub(crate) fn check(
        &self,
        op: &'static str,
        rows: usize,
        d: usize,
        chunks: &[usize],
    ) -> Result<usize> {
        expect_f32(op, "modulation", self.table)?;
        let stride = self.table.cols();
        if self.tokens == 0 || !rows.is_multiple_of(self.tokens) {
            return shape_err(
                op,
                format!(
                    "{rows} rows are not a whole number of samples of {} tokens",
                    self.tokens
                ),
            );
        }
        if self.table.rows() != rows / self.tokens {
            return shape_err(
                op,
                format!(
                    "modulation {:?} has {} rows for {} samples",
                    self.table.shape(),
                    self.table.rows(),
                    rows / self.tokens
                ),
            );
        }
        if let Some(&c) = chunks.iter().find(|&&c| (c + 1) * d > stride) {
            return shape_err(
                op,
                format!("chunk {c} of width {d} lies outside the modulation row of {stride}"),
            );
        }
        Ok(stride)
    }
}

/// Rows per LayerNorm workgroup: on software adapters a group of 8 shares one barrier sequence
/// and each column's modulation loads (barriers and buffer loads dominate there).
fn per_group(gpu: &Gpu) -> usize {
    if gpu.caps.software { 8 } else { 1 }
}

/// Texels of the flat texture GroupNorm fills at a time on software adapters (256 MiB).
const FLAT_TEXELS: usize = 1 << 24;

/// LayerNorm over the last dimension: (x - mean) / sqrt(var + eps), then optional affine
/// weight/bias, then optional modulation x * (1 + scale) + shift.
pub fn layer_norm(
    gpu: &Gpu,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    modulation: Option<Modulation<'_>>,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    expect_f32(OP, "input", x)?;
    let (rows, d) = (x.rows(), x.cols());
    for (what, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            expect_f32(OP, what, t)?;
            if t.shape() != [d] {
                return shape_err(OP, format!("{what} {:?} must be [{d}]", t.shape()));
            }
        }
    }
    let (mod_stride, shift, scale, tokens) = match &modulation {
        Some(m) => (
            m.check(OP, rows, d, &[m.shift, m.scale])?,
            m.shift * d,
            m.scale * d,
            m.tokens,
        ),
        None => (0, 0, 0, rows.max(1)),
    };
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let (snippet, w) = elem_width(d, mod_stride);
    if rows == 0 {
        return Ok(y);
    }
    // Software adapters read x through a texture (rows_in_texture.wgsl), in chunks that fit
    // the texture height and the pack kernel's binding; everything else reads the buffer in
    // one dispatch.
    let max_tex = gpu.limits.max_texture_dimension_2d as usize;
    let max_x = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let rows_per_group = per_group(gpu);
    let texture = gpu.caps.software && w == 4 && d / 4 <= max_tex;
    let (rows_in, ranges) = if texture {
        let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment);
        let row_bytes = [d as u64 * 4];
        let ranges = chunks_max(OP, rows, &row_bytes, gpu.max_binding(), align, max_tex)?;
        ("rows_in_texture.wgsl", ranges)
    } else {
        ("rows_in_buffer.wgsl", std::iter::once(0..rows).collect())
    };
    let kernel = Kernel::new(
        OP,
        &[
            "common.wgsl",
            snippet,
            rows_in,
            "welford.wgsl",
            "layer_norm.wgsl",
        ],
    )
    .define("WG", reduction_width(gpu))
    .define("SETS", rows_per_group as u32)
    .define("HAS_WEIGHT", weight.is_some() as u32)
    .define("HAS_BIAS", bias.is_some() as u32)
    .define("HAS_MOD", modulation.is_some() as u32)
    // Every index is in range by the checks above; naga's clamps measured about 10 % here.
    .trusted();
    for std::ops::Range { start, end } in ranges {
        let params = [
            start as u32,
            end as u32,
            d as u32,
            (d / w) as u32,
            tokens as u32,
            eps.to_bits(),
            (mod_stride / w) as u32,
            (shift / w) as u32,
            (scale / w) as u32,
        ];
        let view;
        let x_bind = if texture {
            view = rows_texture(gpu, "layer_norm_pack", x, d, start..end)?;
            Bind::Texture(&view)
        } else {
            x.bind("x")
        };
        let binds = [
            x_bind,
            weight.map_or_else(|| gpu.unused(), |w| w.bind("weight")),
            bias.map_or_else(|| gpu.unused(), |b| b.bind("bias")),
            modulation
                .as_ref()
                .map_or_else(|| gpu.unused(), |m| m.table.bind("modulation")),
            y.bind("y"),
        ];
        let row_groups = (end - start).div_ceil(rows_per_group);
        let groups = [
            row_groups.min(max_x) as u32,
            row_groups.div_ceil(max_x) as u32,
            1,
        ];
        let n = ((end - start) * d) as f64;
        gpu.dispatch(
            &kernel,
            words(&params),
            &binds,
            groups,
            Cost::new(8.0 * n, 8.0 * n),
        )?;
    }
    Ok(y)
}

/// A view of head segments inside the rows of a matrix: segment s of row r covers columns
/// col_off + s * d .. + d. Used to normalise or rotate q and k inside fused qkv activations.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub col_off: usize,
    pub heads: usize,
    pub d: usize,
}

impl Heads {
    pub(crate) fn check(&self, op: &'static str, x: &Tensor) -> Result<()> {
        expect_f32(op, "input", x)?;
        if self.d == 0 || self.col_off + self.heads * self.d > x.cols() {
            return shape_err(
                op,
                format!(
                    "{} heads of {} from column {} exceed rows of {}",
                    self.heads,
                    self.d,
                    self.col_off,
                    x.cols()
                ),
            );
        }
        Ok(())
    }
}

/// RMSNorm with a learned weight [d], in place on every head segment of `x`.
pub fn rms_norm_heads(
    gpu: &Gpu,
    x: &Tensor,
    heads: Heads,
    weight: &Tensor,
    eps: f32,
) -> Result<()> {
    const OP: &str = "rms_norm";
    heads.check(OP, x)?;
    expect_f32(OP, "weight", weight)?;
    if weight.shape() != [heads.d] {
        return shape_err(
            OP,
            format!("weight {:?} must be [{}]", weight.shape(), heads.d),
        );
    }
    let rows = x.rows();
    let n = rows * heads.heads;
    // vec4 elements when the segments, the rows and the offset are whole vec4s.
    let (snippet, w) = if heads.col_off.is_multiple_of(4) {
        elem_width(heads.d, x.cols())
    } else {
        elem_width(1, 0)
    };
    let params = [
        rows as u32,
        heads.heads as u32,
        (heads.d / w) as u32,
        (x.cols() / w) as u32,
        (heads.col_off / w) as u32,
        eps.to_bits(),
    ];
    let work = (n * heads.d) as f64;
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", snippet, "rms_norm.wgsl"]),
        words(&params),
        &[weight.bind("weight"), x.bind("x")],
        grid_flat(gpu, n),
        Cost::new(4.0 * work, 12.0 * work),
    )
}

/// GroupNorm over NCHW [B, C, H, W] with per-channel weight and bias, then `act`.
pub fn group_norm(
    gpu: &Gpu,
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    act: Act,
) -> Result<Tensor> {
    const OP: &str = "group_norm";
    expect_f32(OP, "input", x)?;
    let [b, c, h, w] = x.shape() else {
        return shape_err(
            OP,
            format!("input must be [B, C, H, W], got {:?}", x.shape()),
        );
    };
    if groups == 0 || c % groups != 0 {
        return Err(KernelError::Shape {
            op: OP,
            message: format!("{c} channels do not split into {groups} groups"),
        });
    }
    for (what, t) in [("weight", weight), ("bias", bias)] {
        expect_f32(OP, what, t)?;
        if t.shape() != [*c] {
            return shape_err(OP, format!("{what} {:?} must be [{c}]", t.shape()));
        }
    }
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let (snippet, vw) = elem_width(h * w, 0);
    let hw = h * w / vw;
    let span = *c / groups * hw;
    let total = b * groups;
    if total == 0 || span == 0 {
        return Ok(y);
    }
    // Software adapters read x through the flat texture (flat_in_texture.wgsl), as many whole
    // groups at a time as fill at most FLAT_TEXELS texels; everything else reads the buffer.
    let max_x = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let width = flat_width(gpu);
    let max_rows = gpu.limits.max_texture_dimension_2d as usize;
    let max_span = FLAT_TEXELS.min(width * max_rows);
    let texture = gpu.caps.software && vw == 4 && span <= max_span;
    let (input, per_dispatch) = if texture {
        ("flat_in_texture.wgsl", (max_span / span).min(max_x))
    } else {
        ("flat_in_buffer.wgsl", max_x)
    };
    let kernel = Kernel::new(
        OP,
        &[
            "common.wgsl",
            snippet,
            input,
            "welford.wgsl",
            "group_norm.wgsl",
        ],
    )
    .define("WG", reduction_width(gpu))
    .define("SETS", 1)
    .define("ACT", act as u32)
    .define("FLAT_WIDTH", width as u32)
    // Every index is in range by the checks above.
    .trusted();
    for first in (0..total).step_by(per_dispatch) {
        let count = per_dispatch.min(total - first);
        let params = [
            first as u32,
            (first * span) as u32,
            *c as u32,
            groups as u32,
            hw as u32,
            eps.to_bits(),
        ];
        let view;
        let x_bind = if texture {
            view = flat_texture(gpu, x, first * span..(first + count) * span)?;
            Bind::Texture(&view)
        } else {
            x.bind("x")
        };
        let n = (count * span * vw) as f64;
        gpu.dispatch(
            &kernel,
            words(&params),
            &[
                x_bind,
                weight.bind("weight"),
                bias.bind("bias"),
                y.bind("y"),
            ],
            [count as u32, 1, 1],
            Cost::new(10.0 * n, 8.0 * n),
        )?;
    }
    Ok(y)
}
