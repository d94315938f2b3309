//! Element-wise activations (GELU tanh/exact, quick-GELU, SiLU); also fused into `linear`.

use crate::context::Gpu;
use crate::error::Result;
use crate::ops::{expect_f32, flat_chunks, grid_flat, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::Tensor;

/// Activation function, numbered as the ACT_* constants of common.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None = 0,
    GeluTanh = 1,
    GeluErf = 2,
    QuickGelu = 3,
    Silu = 4,
}

/// y = act(x), element-wise, into a new tensor.
pub fn activation(gpu: &Gpu, x: &Tensor, act: Act) -> Result<Tensor> {
    expect_f32("activation", "input", x)?;
    let y = Tensor::empty(gpu, x.shape(), x.dtype())?;
    let kernel = Kernel::new("activation", &["common.wgsl", "activation.wgsl"]);
    for r in flat_chunks(gpu, "activation", x.numel())? {
        let (n, off, bytes) = (r.len(), r.start as u64 * 4, r.len() as u64 * 4);
        gpu.dispatch(
            &kernel,
            words(&[n as u32, act as u32]),
            &[x.bind_range("x", off, bytes), y.bind_range("y", off, bytes)],
            grid_flat(gpu, n),
            Cost::new(8.0 * n as f64, 8.0 * n as f64),
        )?;
    }
    Ok(y)
}
