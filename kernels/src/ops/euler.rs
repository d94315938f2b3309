//! Sampler arithmetic: the flow-matching Euler step and the classifier-free-guidance combine.

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::{elem_width, expect_f32, grid_flat, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// x += (sigma_next - sigma) * v, in place.
pub fn euler_step(gpu: &Gpu, x: &Tensor, v: &Tensor, dt: f32) -> Result<()> {
    const OP: &str = "euler";
    expect_f32(OP, "x", x)?;
    expect_f32(OP, "v", v)?;
    if x.shape() != v.shape() {
        return shape_err(
            OP,
            format!("x {:?} and v {:?} differ", x.shape(), v.shape()),
        );
    }
    let n = x.numel();
    let (snippet, w) = elem_width(n, 0);
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", snippet, "euler.wgsl"]),
        words(&[(n / w) as u32, dt.to_bits()]),
        &[v.bind("v"), x.bind("x")],
        grid_flat(gpu, n / w),
        Cost::new(2.0 * n as f64, 12.0 * n as f64),
    )
}

/// v [2B, ...] holding unconditional rows then conditional rows -> u + g (c - u), [B, ...].
pub fn cfg_combine(gpu: &Gpu, v: &Tensor, guidance: f32) -> Result<Tensor> {
    const OP: &str = "cfg";
    expect_f32(OP, "v", v)?;
    let Some(&rows) = v.shape().first().filter(|&&b| b % 2 == 0 && b > 0) else {
        return shape_err(
            OP,
            format!(
                "v {:?} must have an even batch (uncond rows, then cond rows)",
                v.shape()
            ),
        );
    };
    let mut shape = v.shape().to_vec();
    shape[0] = rows / 2;
    let out = Tensor::empty(gpu, &shape, DType::F32)?;
    let n = out.numel();
    let (snippet, w) = elem_width(n, 0);
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", snippet, "cfg.wgsl"]),
        words(&[(n / w) as u32, guidance.to_bits()]),
        &[v.bind("v"), out.bind("out")],
        grid_flat(gpu, n / w),
        Cost::new(3.0 * n as f64, 12.0 * n as f64),
    )?;
    Ok(out)
}
