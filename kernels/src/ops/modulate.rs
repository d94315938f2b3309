//! adaLN modulation x * (1 + scale) + shift and the gated residual x += gate * y, with
//! per-sample modulation chunks broadcast over tokens.

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::norm::Modulation;
use crate::ops::{elem_width, expect_f32, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// x * (1 + scale) + shift into a new tensor.
pub fn modulate(gpu: &Gpu, x: &Tensor, m: Modulation<'_>) -> Result<Tensor> {
    const OP: &str = "modulate";
    expect_f32(OP, "input", x)?;
    let (rows, d) = (x.rows(), x.cols());
    let stride = m.check(OP, rows, d, &[m.shift, m.scale])?;
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let n = x.numel();
    let (snippet, w) = elem_width(d, stride);
    let params = [
        rows as u32,
        (d / w) as u32,
        m.tokens as u32,
        (stride / w) as u32,
        (m.shift * d / w) as u32,
        (m.scale * d / w) as u32,
    ];
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", snippet, "modulate.wgsl"]),
        words(&params),
        &[x.bind("x"), m.table.bind("modulation"), y.bind("y")],
        column_walk_grid(gpu, d / w, rows),
        Cost::new(2.0 * n as f64, 8.0 * n as f64),
    )?;
    Ok(y)
}

/// x += gate * y in place; `gate` is a chunk index of the modulation table (tokens per sample
/// as in `table`).
pub fn gated_residual(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    table: &Tensor,
    tokens: usize,
    gate: usize,
) -> Result<()> {
    const OP: &str = "gated_residual";
    expect_f32(OP, "x", x)?;
    expect_f32(OP, "y", y)?;
    if x.shape() != y.shape() {
        return shape_err(
            OP,
            format!("x {:?} and y {:?} differ", x.shape(), y.shape()),
        );
    }
    let (rows, d) = (x.rows(), x.cols());
    let m = Modulation {
        table,
        tokens,
        shift: gate,
        scale: gate,
    };
    let stride = m.check(OP, rows, d, &[gate])?;
    let n = x.numel();
    let (snippet, w) = elem_width(d, stride);
    let params = [
        rows as u32,
        (d / w) as u32,
        tokens as u32,
        (stride / w) as u32,
        (gate * d / w) as u32,
    ];
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", snippet, "gated_residual.wgsl"]),
        words(&params),
        &[y.bind("y"), table.bind("modulation"), x.bind("x")],
        column_walk_grid(gpu, d / w, rows),
        Cost::new(2.0 * n as f64, 12.0 * n as f64),
    )
}

/// Workgroups for modulate.wgsl and gated_residual.wgsl: 64 columns by 8 rows each, row
/// groups folded into z past the per-dimension limit.
fn column_walk_grid(gpu: &Gpu, cols: usize, rows: usize) -> [u32; 3] {
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let row_groups = rows.div_ceil(8).max(1);
    let y = row_groups.min(max);
    [
        cols.div_ceil(64) as u32,
        y as u32,
        row_groups.div_ceil(y) as u32,
    ]
}
