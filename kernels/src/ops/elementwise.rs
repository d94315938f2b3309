//! Element-wise arithmetic with a repeating (broadcast) second operand, and widening of stored
//! f16/bf16 tensors to f32 on the device.

use crate::context::Gpu;
use crate::error::{KernelError, Result};
use crate::ops::{expect_f32, grid_flat, weight_snippet, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

fn binary(gpu: &Gpu, op: &'static str, code: u32, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    expect_f32(op, "a", a)?;
    expect_f32(op, "b", b)?;
    let (n, nb) = (a.numel(), b.numel());
    if nb == 0 || n % nb != 0 {
        return Err(KernelError::Shape {
            op,
            message: format!(
                "b {:?} does not repeat evenly over a {:?}",
                b.shape(),
                a.shape()
            ),
        });
    }
    let out = Tensor::empty(gpu, a.shape(), DType::F32)?;
    let kernel = Kernel::new(op, &["common.wgsl", "binary.wgsl"]).constant("OP", code);
    gpu.dispatch(
        &kernel,
        words(&[n as u32, nb as u32]),
        &[a.bind("a"), b.bind("b"), out.bind("out")],
        grid_flat(gpu, n),
        Cost::new(n as f64, 12.0 * n as f64),
    )?;
    Ok(out)
}

/// a + b, with b repeated over a (b's element count must divide a's).
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, "add", 0, a, b)
}

/// a * b, with b repeated over a.
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, "mul", 1, a, b)
}

/// a x + b element-wise, into a new tensor.
pub fn affine(gpu: &Gpu, x: &Tensor, a: f32, b: f32) -> Result<Tensor> {
    expect_f32("affine", "input", x)?;
    let n = x.numel();
    let out = Tensor::empty(gpu, x.shape(), DType::F32)?;
    gpu.dispatch(
        &Kernel::new("affine", &["common.wgsl", "affine.wgsl"]),
        words(&[n as u32, a.to_bits(), b.to_bits()]),
        &[x.bind("x"), out.bind("out")],
        grid_flat(gpu, n),
        Cost::new(2.0 * n as f64, 8.0 * n as f64),
    )?;
    Ok(out)
}

/// The tensor as f32: f16/bf16 are widened on the device (so small weights such as biases are
/// uploaded in their stored dtype and converted there, with no host-side copy).
pub fn to_f32(gpu: &Gpu, t: &Tensor) -> Result<Tensor> {
    if t.dtype() == DType::F32 {
        return Ok(t.clone());
    }
    let n = t.numel();
    let out = Tensor::empty(gpu, t.shape(), DType::F32)?;
    let kernel = Kernel::new(
        "cast",
        &[weight_snippet(gpu, t.dtype()), "common.wgsl", "cast.wgsl"],
    );
    gpu.dispatch(
        &kernel,
        words(&[n as u32]),
        &[t.bind("input"), out.bind("out")],
        grid_flat(gpu, n),
        Cost::new(0.0, 6.0 * n as f64),
    )?;
    Ok(out)
}
