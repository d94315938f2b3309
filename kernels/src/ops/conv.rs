//! 2D convolution on NCHW activations with weights in their stored dtype, as a [`Matrix`]
//! [Cout, Cin*kh*kw]. Texture matrices (software adapters) run im2col into a texture and the
//! texture matmul, which writes straight into NCHW. Buffer matrices run the kernel that
//! [`BufferConv`] (a [`Variant`]) chooses: the implicit GEMM staged in workgroup memory
//! (`conv2d_tiled.wgsl`) on hardware GPUs, the direct convolution (`conv2d.wgsl`) on software
//! adapters, which scalarise workgroup memory.

use serde::Serialize;

use crate::caps::{Caps, Variant};
use crate::context::{Bind, Gpu, Scratch};
use crate::error::{Result, shape_err};
use crate::matrix::{Matrix, Store};
use crate::ops::matmul::{OutputRows, dispatch_texture};
use crate::ops::{Act, chunks_max, expect_f32, weight_snippet, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// Kernel size, stride and zero padding (top, left, bottom, right) of a convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    pub kernel: [usize; 2],
    pub stride: usize,
    pub pad: [usize; 4],
}

impl ConvGeometry {
    /// A k x k kernel with symmetric padding.
    pub fn square(k: usize, stride: usize, pad: usize) -> Self {
        ConvGeometry {
            kernel: [k, k],
            stride,
            pad: [pad; 4],
        }
    }
}

/// Kernels for convolution weights in a storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BufferConv {
    /// conv2d.wgsl: one output pixel x four channels per invocation, operands straight from
    /// the buffers (8 % of the FMA ceiling on an H200 at 256 channels, 64 x 64).
    Direct,
    /// conv2d_tiled.wgsl: an implicit GEMM, 64 channels x 64 pixels per workgroup from weights
    /// and gathered patches staged in workgroup memory.
    Tiled,
}

impl Variant for BufferConv {
    fn for_caps(caps: &Caps) -> Self {
        if caps.software {
            BufferConv::Direct
        } else {
            BufferConv::Tiled
        }
    }
}

/// y = conv2d(x, w) + b; x [B, Cin, H, W], w [Cout, Cin*kh*kw], b [Cout] f32.
pub fn conv2d(
    gpu: &Gpu,
    x: &Tensor,
    w: &Matrix,
    bias: Option<&Tensor>,
    g: ConvGeometry,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    expect_f32(OP, "input", x)?;
    let [b, cin, h, wd] = *x.shape() else {
        return shape_err(
            OP,
            format!("input must be [B, C, H, W], got {:?}", x.shape()),
        );
    };
    let [kh, kw] = g.kernel;
    let cout = w.rows();
    if kh * kw == 0 || w.cols() != cin * kh * kw {
        return shape_err(
            OP,
            format!(
                "weight [{cout}, {}] is not {cin} input channels x {kh}x{kw}",
                w.cols()
            ),
        );
    }
    if let Some(bias) = bias {
        expect_f32(OP, "bias", bias)?;
        if bias.shape() != [cout] {
            return shape_err(OP, format!("bias {:?} must be [{cout}]", bias.shape()));
        }
    }
    let [pt, pl, pb, pr] = g.pad;
    if g.stride == 0 || h + pt + pb < kh || wd + pl + pr < kw {
        return shape_err(
            OP,
            format!(
                "kernel {kh}x{kw} stride {} does not fit a padded {h}x{wd} input",
                g.stride
            ),
        );
    }
    let oh = (h + pt + pb - kh) / g.stride + 1;
    let ow = (wd + pl + pr - kw) / g.stride + 1;
    let y = Tensor::empty(gpu, &[b, cout, oh, ow], DType::F32)?;
    let ksize = cin * kh * kw;
    match &w.store {
        Store::Textures { .. } => {
            let pixels = b * oh * ow;
            let max_rows = gpu.limits.max_texture_dimension_2d as usize;
            let texels = ksize / 4;
            // Rows of the im2col texture are output pixels; no binding limit applies to them.
            for rows in chunks_max(OP, pixels, &[1], u64::MAX, 1, max_rows)? {
                let (_, tex) =
                    gpu.scratch_texture(Scratch::Packed, texels as u32, rows.len() as u32)?;
                let params = [
                    texels as u32,
                    rows.len() as u32,
                    rows.start as u32,
                    cin as u32,
                    h as u32,
                    wd as u32,
                    ow as u32,
                    (oh * ow) as u32,
                    g.stride as u32,
                    pt as u32,
                    pl as u32,
                ];
                gpu.dispatch(
                    &Kernel::new("conv_im2col", &["im2col_texture.wgsl"])
                        .constant("KH", kh as u32)
                        .constant("KW", kw as u32),
                    words(&params),
                    &[x.bind("x"), Bind::Texture(&tex)],
                    [rows.len().div_ceil(64) as u32, texels.div_ceil(4) as u32, 1],
                    Cost::new(0.0, 8.0 * (rows.len() * ksize) as f64),
                )?;
                let out = OutputRows {
                    first: rows.start,
                    pix: oh * ow,
                };
                dispatch_texture(gpu, &tex, rows.len(), w, bias, Act::None, y.bind("y"), out)?;
            }
        }
        Store::Buffer(wt) => {
            let flops = 2.0 * (b * cout * oh * ow * ksize) as f64;
            let bytes = (x.numel() * 4 + wt.numel() * wt.dtype().size() + y.numel() * 4) as f64;
            let binds = [
                x.bind("x"),
                wt.bind("weight"),
                bias.map_or_else(|| gpu.unused(), |t| t.bind("bias")),
                y.bind("y"),
            ];
            let snippet = weight_snippet(gpu, wt.dtype());
            let (kernel, params, groups) = match gpu.variant::<BufferConv>() {
                BufferConv::Direct => (
                    Kernel::new(OP, &[snippet, "common.wgsl", "conv2d.wgsl"]),
                    vec![
                        cin,
                        h,
                        wd,
                        cout,
                        oh,
                        ow,
                        kh,
                        kw,
                        g.stride,
                        pt,
                        pl,
                        bias.is_some() as usize,
                    ],
                    [(oh * ow).div_ceil(64), cout.div_ceil(4), b],
                ),
                BufferConv::Tiled => (
                    Kernel::new("conv2d_tiled", &[snippet, "conv2d_tiled.wgsl"])
                        .define("KH", kh as u32)
                        .define("KW", kw as u32)
                        .define("WVEC", ksize.is_multiple_of(4) as u32)
                        // Every index is clamped or checked in the kernel.
                        .trusted(),
                    vec![
                        cin,
                        h,
                        wd,
                        cout,
                        oh,
                        ow,
                        ksize,
                        ksize.div_ceil(4),
                        g.stride,
                        pt,
                        pl,
                        bias.is_some() as usize,
                    ],
                    [(oh * ow).div_ceil(64), cout.div_ceil(64), b],
                ),
            };
            let params: Vec<u32> = params.iter().map(|&v| v as u32).collect();
            let groups = groups.map(|g| g as u32);
            gpu.dispatch(
                &kernel,
                words(&params),
                &binds,
                groups,
                Cost::new(flops, bytes),
            )?;
        }
    }
    Ok(y)
}
