//! The Euler sampler: x <- x + (sigma_next - sigma) v(x, conditioning level), with classifier-free
//! guidance as one batch of [unconditional, conditional] rows, and NoiseShift's calibrated
//! conditioning levels (the model sees sigma_hat_i while the update uses the true sigmas).

use noiseshift_kernels::{Gpu, Tensor, ops};

use crate::error::{Result, input};
use crate::models::mmdit::{Mmdit, TextConditioning};

/// What the sampler needs per step.
pub struct Plan<'a> {
    /// N + 1 true sigmas, 1 .. 0.
    pub sigmas: &'a [f64],
    /// N conditioning levels (the sigmas themselves, or a calibration table's sigma_hat).
    pub levels: &'a [f64],
    /// Guidance scale; <= 1 means a single conditional pass.
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
    model: &Mmdit,
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
    let guided = plan.guidance > 1.0;
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
    for i in 0..steps {
        let dt = plan.sigmas[i + 1] - plan.sigmas[i];
        let levels = vec![plan.levels[i]; b];
        let v = if guided {
            model.forward_guided(gpu, &x, &levels, text, plan.guidance as f32)?
        } else {
            model.forward(gpu, &x, &levels, text)?
        };
        ops::euler::euler_step(gpu, &x, &v, dt as f32)?;
        gpu.flush()?;
        on_step(i)?;
    }
    Ok(x)
}
