//! Element-wise activations (GELU tanh/exact, quick-GELU, SiLU); also fused into `linear`.

use crate::context::Gpu;
use crate::error::Result;
use crate::ops::{elem_width, expect_f32, flat_chunks, grid_flat, words};
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
    let (snippet, w) = elem_width(x.numel(), 0);
    let kernel = Kernel::new("activation", &["common.wgsl", snippet, "activation.wgsl"])
        .define("ACT", act as u32);
    let elem_bytes = 4 * w as u64;
    for r in flat_chunks(gpu, "activation", x.numel() / w, elem_bytes)? {
        let (n, off, bytes) = (
            r.len(),
            r.start as u64 * elem_bytes,
            r.len() as u64 * elem_bytes,
        );
        gpu.dispatch(
            &kernel,
            words(&[n as u32]),
            &[x.bind_range("x", off, bytes), y.bind_range("y", off, bytes)],
            grid_flat(gpu, n),
            Cost::new(8.0 * bytes as f64 / 4.0, 2.0 * bytes as f64),
        )?;
    }
    Ok(y)
}
