//! 2D convolution on NCHW activations with weights in their stored dtype.

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::{expect_f32, weight_snippet, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// Stride and zero padding (top, left, bottom, right) of a convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    pub stride: usize,
    pub pad: [usize; 4],
}

impl ConvGeometry {
    /// Symmetric padding on all sides.
    pub fn same(stride: usize, pad: usize) -> Self {
        ConvGeometry { stride, pad: [pad; 4] }
    }
}

/// y = conv2d(x, w) + b; x [B, Cin, H, W], w [Cout, Cin, kh, kw], b [Cout] f32.
pub fn conv2d(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: ConvGeometry) -> Result<Tensor> {
    const OP: &str = "conv2d";
    expect_f32(OP, "input", x)?;
    let [b, cin, h, wd] = *x.shape() else {
        return shape_err(OP, format!("input must be [B, C, H, W], got {:?}", x.shape()));
    };
    let [cout, wcin, kh, kw] = *w.shape() else {
        return shape_err(OP, format!("weight must be [Cout, Cin, kh, kw], got {:?}", w.shape()));
    };
    if wcin != cin {
        return shape_err(OP, format!("weight {:?} expects {wcin} input channels, input has {cin}", w.shape()));
    }
    if let Some(bias) = bias {
        expect_f32(OP, "bias", bias)?;
        if bias.shape() != [cout] {
            return shape_err(OP, format!("bias {:?} must be [{cout}]", bias.shape()));
        }
    }
    let [pt, pl, pb, pr] = g.pad;
    if g.stride == 0 || h + pt + pb < kh || wd + pl + pr < kw {
        return shape_err(OP, format!("kernel {kh}x{kw} stride {} does not fit a padded {h}x{wd} input", g.stride));
    }
    let oh = (h + pt + pb - kh) / g.stride + 1;
    let ow = (wd + pl + pr - kw) / g.stride + 1;
    let y = Tensor::empty(gpu, &[b, cout, oh, ow], DType::F32)?;
    let params = [
        cin as u32, h as u32, wd as u32, cout as u32, oh as u32, ow as u32, kh as u32, kw as u32,
        g.stride as u32, pt as u32, pl as u32, bias.is_some() as u32,
    ];
    let kernel = Kernel::new(OP, &[weight_snippet(gpu, w.dtype()), "common.wgsl", "conv2d.wgsl"]);
    let flops = 2.0 * (b * cout * oh * ow * cin * kh * kw) as f64;
    let bytes = (x.numel() * 4 + w.numel() * w.dtype().size() + y.numel() * 4) as f64;
    gpu.dispatch(
        &kernel,
        words(&params),
        &[x.bind("x"), w.bind("weight"), bias.map_or_else(|| x.bind_range("x", 0, 4), |t| t.bind("bias")), y.bind("y")],
        [(oh * ow).div_ceil(64) as u32, cout.div_ceil(4) as u32, b as u32],
        Cost::new(flops, bytes),
    )?;
    Ok(y)
}
