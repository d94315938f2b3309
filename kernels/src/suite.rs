//! Every kernel at representative model shapes: an MMDiT block at SD3-medium width (hidden
//! 1536, 24 heads of 64, MLP 6144) over `tokens` tokens, and a VAE decoder level (256 channels,
//! 3x3 conv at 64x64), then the sampler's and calibration's kernels on 512x512 latents. Used by
//! `noiseshift profile` and the kernel bench.

use crate::context::Gpu;
use crate::error::Result;
use crate::matrix::{Matrix, MatrixLayout};
use crate::ops::attention::{KvSource, QuerySource};
use crate::ops::conv::ConvGeometry;
use crate::ops::layout::PatchOrder;
use crate::ops::norm::{Heads, Modulation};
use crate::ops::{self, Act};
use crate::tensor::{DType, Tensor};

/// Shapes of the suite.
#[derive(Clone, Copy, Debug)]
pub struct SuiteShape {
    /// Image plus text tokens of one sample (1357 = 512x512 image + 333 text tokens).
    pub tokens: usize,
    pub hidden: usize,
    pub heads: usize,
    /// VAE level: channels and spatial size.
    pub vae_channels: usize,
    pub vae_size: usize,
}

impl Default for SuiteShape {
    fn default() -> Self {
        SuiteShape {
            tokens: 1357,
            hidden: 1536,
            heads: 24,
            vae_channels: 256,
            vae_size: 64,
        }
    }
}

/// Small values that stay well away from overflow and denormals whatever a kernel does.
fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect()
}

fn filled(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_f32(gpu, shape, &values(shape.iter().product()))
}

/// A weight matrix in `dtype`, laid out as the adapter prefers.
fn matrix(gpu: &Gpu, n: usize, k: usize, dtype: DType) -> Result<Matrix> {
    let v = values(n * k);
    let bytes: Vec<u8> = match dtype {
        DType::F32 => bytemuck::cast_slice(&v).to_vec(),
        DType::F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
    };
    Matrix::upload(gpu, n, k, dtype, &[&bytes], MatrixLayout::Auto)
}

/// Run every kernel `reps` times (after one untimed warm-up pass that builds the pipelines).
/// Timings land in the profiler, which the caller enables and reads.
pub fn run(gpu: &Gpu, shape: SuiteShape, reps: usize) -> Result<()> {
    let (t, d, h) = (shape.tokens, shape.hidden, shape.heads);
    let hd = d / h;
    let x = filled(gpu, &[t, d])?;
    let table = filled(gpu, &[1, 9 * d])?;
    let w_qkv = matrix(gpu, 3 * d, d, DType::F16)?;
    let w_fc1 = matrix(gpu, 4 * d, d, DType::F16)?;
    let w_fc2 = matrix(gpu, d, 4 * d, DType::F16)?;
    let w_fc1_f32 = matrix(gpu, 4 * d, d, DType::F32)?;
    let bias = filled(gpu, &[4 * d])?;
    let norm_w = filled(gpu, &[hd])?;
    let (c, s) = (shape.vae_channels, shape.vae_size);
    let img = filled(gpu, &[1, c, s, s])?;
    let w_conv = matrix(gpu, c, c * 9, DType::F16)?;
    let conv_bias = filled(gpu, &[c])?;
    let latents = filled(gpu, &[1, 16, 64, 64])?;
    // One calibration stage's predictions for one sample: 21 candidates (NOISESHIFT.md's
    // default windows), each row its own loss group against the shared target.
    let candidates = filled(gpu, &[21, 16, 64, 64])?;

    let was = gpu.profiler().enabled();
    for rep in 0..=reps {
        gpu.profiler().set_enabled(was && rep > 0);
        let m = Modulation {
            table: &table,
            tokens: t,
            shift: 0,
            scale: 1,
        };
        let n = ops::norm::layer_norm(gpu, &x, None, None, Some(m), 1e-6)?;
        let qkv = ops::matmul::linear(gpu, &n, &w_qkv, None, Act::None)?;
        ops::norm::rms_norm_heads(
            gpu,
            &qkv,
            Heads {
                col_off: 0,
                heads: h,
                d: hd,
            },
            &norm_w,
            1e-6,
        )?;
        let kv = [KvSource {
            tensor: &qkv,
            len: t,
            k_off: d,
            v_off: 2 * d,
        }];
        let attn = ops::attention::attention(
            gpu,
            QuerySource {
                tensor: &qkv,
                len: t,
                off: 0,
            },
            &kv,
            1,
            h,
            hd,
            0.125,
        )?;
        ops::modulate::gated_residual(gpu, &x, &attn.reshape(&[t, d])?, &table, t, 2)?;
        let hidden = ops::matmul::linear(gpu, &n, &w_fc1, Some(&bias), Act::GeluTanh)?;
        let _ = ops::matmul::linear(gpu, &n, &w_fc1_f32, Some(&bias), Act::GeluTanh)?;
        let out = ops::matmul::linear(gpu, &hidden, &w_fc2, None, Act::None)?;
        let _ = ops::modulate::modulate(gpu, &out, m)?;
        let _ = ops::activation::activation(gpu, &hidden, Act::Silu)?;

        let conv = ops::conv::conv2d(
            gpu,
            &img,
            &w_conv,
            Some(&conv_bias),
            ConvGeometry::square(3, 1, 1),
        )?;
        let normed =
            ops::norm::group_norm(gpu, &conv, 32, &conv_bias, &conv_bias, 1e-6, Act::Silu)?;
        let _ = ops::resample::upsample_nearest2x(gpu, &normed)?;

        let tokens = ops::layout::patchify(gpu, &latents, 2, PatchOrder::ChannelFirst)?;
        let _ = ops::layout::unpatchify(gpu, &tokens, 16, 64, 64, 2, PatchOrder::ChannelLast)?;
        ops::euler::euler_step(gpu, &latents, &latents.duplicate(gpu)?, -0.01)?;
        let _ = ops::reduce::squared_error_groups(gpu, &candidates, &latents, 1)?;
        gpu.finish()?;
    }
    gpu.profiler().set_enabled(was);
    Ok(())
}
