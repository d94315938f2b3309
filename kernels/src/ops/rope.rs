//! Rotary position embedding on adjacent pairs with per-axis frequency tables (FLUX).

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::norm::Heads;
use crate::ops::{expect_f32, grid_flat, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::Tensor;

/// Angle tables for positions with several axes: axis a of width dims[a] contributes
/// dims[a]/2 angles pos[a] * theta^(-2i/dims[a]). Computed in f64 on the host (the arguments
/// reach hundreds of radians, where GPU sin/cos lose accuracy). Returns (cos, sin), each
/// [positions, sum(dims)/2] row-major.
pub fn rope_tables(positions: &[Vec<f64>], dims: &[usize], theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half: usize = dims.iter().sum::<usize>() / 2;
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for pos in positions {
        for (a, &dim) in dims.iter().enumerate() {
            for i in 0..dim / 2 {
                let freq = theta.powf(-2.0 * i as f64 / dim as f64);
                let angle = pos[a] * freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
    }
    (cos, sin)
}

/// Rotate every head segment of `x` in place; row r uses table row r mod tokens.
pub fn rope(gpu: &Gpu, x: &Tensor, heads: Heads, cos: &Tensor, sin: &Tensor) -> Result<()> {
    const OP: &str = "rope";
    heads.check(OP, x)?;
    if !heads.d.is_multiple_of(2) {
        return shape_err(OP, format!("head dim {} must be even", heads.d));
    }
    for (what, t) in [("cos", cos), ("sin", sin)] {
        expect_f32(OP, what, t)?;
        if t.cols() != heads.d / 2 {
            return shape_err(
                OP,
                format!(
                    "{what} table {:?} must have {} columns",
                    t.shape(),
                    heads.d / 2
                ),
            );
        }
    }
    let tokens = cos.rows();
    if sin.rows() != tokens || tokens == 0 || !x.rows().is_multiple_of(tokens) {
        return shape_err(
            OP,
            format!(
                "tables of {tokens} positions do not divide {} rows",
                x.rows()
            ),
        );
    }
    let n = x.rows() * heads.heads * heads.d / 2;
    let params = [
        x.rows() as u32,
        heads.heads as u32,
        heads.d as u32,
        x.cols() as u32,
        heads.col_off as u32,
        tokens as u32,
    ];
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", "rope.wgsl"]),
        words(&params),
        &[cos.bind("cos"), sin.bind("sin"), x.bind("x")],
        grid_flat(gpu, n),
        Cost::new(6.0 * n as f64, 24.0 * n as f64),
    )
}
