//! Nearest-neighbour x2 upsampling (the VAE decoder's up blocks).

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::{expect_f32, grid_flat, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// [B, C, H, W] -> [B, C, 2H, 2W].
pub fn upsample_nearest2x(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2x";
    expect_f32(OP, "input", x)?;
    let [b, c, h, w] = *x.shape() else {
        return shape_err(
            OP,
            format!("input must be [B, C, H, W], got {:?}", x.shape()),
        );
    };
    let y = Tensor::empty(gpu, &[b, c, 2 * h, 2 * w], DType::F32)?;
    let n = x.numel();
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", "upsample.wgsl"]),
        words(&[n as u32, w as u32]),
        &[x.bind("x"), y.bind("y")],
        grid_flat(gpu, n),
        Cost::new(0.0, 20.0 * n as f64),
    )?;
    Ok(y)
}
