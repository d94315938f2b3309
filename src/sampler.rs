//! The Euler sampler: x <- x + (sigma_next - sigma) v(x, conditioning level), with classifier-free
//! guidance as one batch of [unconditional, conditional] rows (SD3; FLUX.1-dev takes guidance
//! as an input instead), and NoiseShift's calibrated conditioning levels (the model sees
//! sigma_hat_i while the update uses the true sigmas).

use noiseshift_kernels::{Gpu, Tensor, ops};

use crate::error::{Error, Result, input};
use crate::models::joint::TextConditioning;
use crate::models::transformer::Transformer;

/// What the sampler needs per step.
pub struct Plan<'a> {
    /// N + 1 true sigmas, 1 .. 0.
    pub sigmas: &'a [f64],
    /// N conditioning levels (the sigmas themselves, or a calibration table's sigma_hat).
    pub levels: &'a [f64],
    /// Guidance scale: for SD3, <= 1 means a single conditional pass; FLUX.1-dev's embedded
    /// guidance.
    pub guidance: f64,
}

/// Conditioning for the whole batch: conditional rows, and unconditional ones for guidance.
pub struct Prompts {
    pub cond: TextConditioning,
    pub uncond: Option<TextConditioning>,
}

/// Run the sampler from `latents` [B, C, H, W]; `on_step(i)` is called after each step.
pub fn sample(
    gpu: &Gpu,
    model: &Transformer,
    latents: &Tensor,
    prompts: &Prompts,
    plan: &Plan<'_>,
    mut on_step: impl FnMut(usize) -> Result<()>,
) -> Result<Tensor> {
    let steps = plan.levels.len();
    if plan.sigmas.len() != steps + 1 {
        return input(format!("{} sigmas for {steps} steps", plan.sigmas.len()));
    }
    let b = latents.shape()[0];
    let guided = model.config().cfg(plan.guidance);
    // With guidance the batch is [uncond rows, cond rows]; the text conditioning is stacked once.
    let stacked;
    let text = if guided {
        let Some(uncond) = &prompts.uncond else {
            return input("guidance > 1 needs negative (unconditional) prompt embeddings");
        };
        stacked = TextConditioning::stack(gpu, uncond, &prompts.cond)?;
        &stacked
    } else {
        &prompts.cond
    };
    let x = latents.duplicate(gpu)?;
    let zeros = Tensor::from_f32(gpu, &[1, x.numel() / b], &vec![0.0; x.numel() / b])?;
    for i in 0..steps {
        let dt = plan.sigmas[i + 1] - plan.sigmas[i];
        let levels = vec![plan.levels[i]; b];
        let v = model.velocity(gpu, &x, &levels, text, plan.guidance)?;
        ops::euler::euler_step(gpu, &x, &v, dt as f32)?;
        gpu.flush()?;
        if !all_finite(gpu, &x, &zeros)? {
            return Err(Error::Input(format!(
                "the latents became non-finite (NaN or Inf) at step {} of {steps} (sigma {:.4}): \
                 check the weights (`inspect --check`), the embeddings and the starting latents; \
                 a value past the f16 range is the other usual cause",
                i + 1,
                plan.sigmas[i]
            )));
        }
        on_step(i)?;
    }
    Ok(x)
}

/// One reduction (the sum of squares of the whole tensor) and four bytes read back: NaN or Inf
/// anywhere makes the sum non-finite.
fn all_finite(gpu: &Gpu, x: &Tensor, zeros: &Tensor) -> Result<bool> {
    let rows = x.shape()[0];
    let flat = x.reshape(&[rows, x.numel() / rows])?;
    let sum = ops::reduce::squared_error_groups(gpu, &flat, zeros, rows)?;
    Ok(sum.to_vec(gpu)?.iter().all(|v| v.is_finite()))
}
