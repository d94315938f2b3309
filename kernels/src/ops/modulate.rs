//! adaLN modulation x * (1 + scale) + shift and the gated residual x += gate * y, with
//! per-sample modulation chunks broadcast over tokens.

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::norm::Modulation;
use crate::ops::{expect_f32, grid_flat, words};
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
    let params = [
        n as u32,
        d as u32,
        m.tokens as u32,
        stride as u32,
        (m.shift * d) as u32,
        (m.scale * d) as u32,
    ];
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", "modulate.wgsl"]),
        words(&params),
        &[x.bind("x"), m.table.bind("modulation"), y.bind("y")],
        grid_flat(gpu, n),
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
    let params = [
        n as u32,
        d as u32,
        tokens as u32,
        stride as u32,
        (gate * d) as u32,
    ];
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", "gated_residual.wgsl"]),
        words(&params),
        &[y.bind("y"), table.bind("modulation"), x.bind("x")],
        grid_flat(gpu, n),
        Cost::new(2.0 * n as f64, 12.0 * n as f64),
    )
}
