//! The diffusion transformer of a checkpoint, whichever family it is: SD3/SD3.5's MMDiT or
//! FLUX.1 (recognised from the keys). Commands, the sampler and the calibration engine go
//! through these two types, so each family is one match arm here and nowhere else; with it
//! the family's sampling defaults and schedule.

use noiseshift_kernels::{Gpu, Tensor};

use crate::error::{Result, input};
use crate::models::flux::{Flux, FluxConfig, FluxKeys, keys::is_flux};
use crate::models::joint::TextConditioning;
use crate::models::mmdit::{Mmdit, MmditConfig};
use crate::models::stream::Offload;
use crate::schedule::{DEFAULT_SHIFT, DynamicShift, flux_sigmas, sd3_sigmas};
use crate::weights::{ModelPath, WeightSet};

#[derive(Clone, Debug)]
pub enum TransformerConfig {
    Mmdit(MmditConfig),
    Flux(FluxConfig),
}

/// A family's defaults where the model folder records none (REFERENCE.md).
pub struct Defaults {
    pub steps: usize,
    pub guidance: f64,
    /// T5 tokens.
    pub max_sequence_length: usize,
}

impl TransformerConfig {
    /// The configuration of a transformer's weights (`json`: its config.json, when there is one).
    pub fn resolve(w: &WeightSet, json: Option<&serde_json::Value>) -> Result<TransformerConfig> {
        Ok(if is_flux(w) {
            TransformerConfig::Flux(FluxConfig::resolve(w, json)?.0)
        } else {
            TransformerConfig::Mmdit(MmditConfig::resolve(w, json)?.0)
        })
    }

    /// The family name for reports and calibration tables.
    pub fn family(&self) -> &'static str {
        match self {
            TransformerConfig::Mmdit(c) => c.family(),
            TransformerConfig::Flux(c) => c.family(),
        }
    }

    pub fn latent_channels(&self) -> usize {
        match self {
            TransformerConfig::Mmdit(c) => c.in_channels,
            TransformerConfig::Flux(c) => c.latent_channels(),
        }
    }

    /// Image sides must be multiples of this many pixels (VAE /8 times the patch or packing 2).
    pub fn pixel_multiple(&self) -> usize {
        match self {
            TransformerConfig::Mmdit(c) => 8 * c.patch,
            TransformerConfig::Flux(_) => 16,
        }
    }

    /// The native (training) image side in pixels.
    pub fn native_pixels(&self) -> usize {
        match self {
            TransformerConfig::Mmdit(c) => 8 * c.sample_size,
            TransformerConfig::Flux(_) => 1024,
        }
    }

    /// Widths of the text tokens and the pooled vector the model takes.
    pub fn text_dims(&self) -> (usize, usize) {
        match self {
            TransformerConfig::Mmdit(c) => (c.joint_attention_dim, c.pooled_dim),
            TransformerConfig::Flux(c) => (c.joint_attention_dim, c.pooled_dim),
        }
    }

    /// Whether `guidance` means classifier-free guidance (a second, unconditional pass, and
    /// negative prompts): SD3's above 1. FLUX.1-dev takes guidance as an input instead.
    pub fn cfg(&self, guidance: f64) -> bool {
        matches!(self, TransformerConfig::Mmdit(_)) && guidance > 1.0
    }

    /// Bytes of the largest activations of one forward of `batch` rows of h x w latents with
    /// `text` tokens: a few token x width tensors (FLUX's single blocks hold both streams'
    /// tokens 7 widths wide, then 5).
    pub fn activation_bytes(&self, batch: usize, h: usize, w: usize, text: usize) -> u64 {
        let (image, hidden) = self.tokens_and_width(h, w);
        let widths = match self {
            TransformerConfig::Mmdit(_) => 12,
            TransformerConfig::Flux(_) => 16,
        };
        (batch * (image + text) * widths * hidden * 4) as u64
    }

    /// Image tokens of h x w latents and the hidden width: the sizes behind activations.
    pub fn tokens_and_width(&self, h: usize, w: usize) -> (usize, usize) {
        match self {
            TransformerConfig::Mmdit(c) => ((h / c.patch) * (w / c.patch), c.hidden),
            TransformerConfig::Flux(c) => ((h / 2) * (w / 2), c.hidden),
        }
    }

    pub fn defaults(&self) -> Defaults {
        match self {
            TransformerConfig::Mmdit(_) => Defaults {
                steps: 28,
                guidance: 7.0,
                max_sequence_length: 256,
            },
            TransformerConfig::Flux(c) if c.guidance_embeds => Defaults {
                steps: 28,
                guidance: 3.5,
                max_sequence_length: 512,
            },
            // No guidance input: 1 means none, as for SD3.
            TransformerConfig::Flux(_) => Defaults {
                steps: 4,
                guidance: 1.0,
                max_sequence_length: 256,
            },
        }
    }

    /// The model's schedule: `--shift` when given (a static shift for any family), else the
    /// scheduler config of the folder, else the family's (SD3: shift 3; FLUX.1-dev: the
    /// dynamic shift; schnell: none).
    pub fn scheduler(&self, path: &ModelPath, shift: Option<f64>) -> Scheduler {
        if let Some(shift) = shift {
            return match self {
                TransformerConfig::Mmdit(_) => Scheduler::Sd3 { shift },
                TransformerConfig::Flux(_) => Scheduler::Flux {
                    shift,
                    dynamic: None,
                },
            };
        }
        match self {
            TransformerConfig::Mmdit(_) => Scheduler::Sd3 {
                shift: path.scheduler_shift.unwrap_or(DEFAULT_SHIFT),
            },
            TransformerConfig::Flux(c) => match &path.scheduler {
                Some(json) => Scheduler::Flux {
                    shift: path.scheduler_shift.unwrap_or(1.0),
                    dynamic: DynamicShift::from_config(json),
                },
                None => Scheduler::Flux {
                    shift: 1.0,
                    dynamic: c.guidance_embeds.then_some(DynamicShift::FLUX),
                },
            },
        }
    }
}

/// How a model's sigmas are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scheduler {
    Sd3 {
        shift: f64,
    },
    /// FluxPipeline's linspace(1, 1/N, N), dynamically shifted by the image size when
    /// `dynamic` is given, else statically by `shift`.
    Flux {
        shift: f64,
        dynamic: Option<DynamicShift>,
    },
}

impl Scheduler {
    /// The static shift (recorded in tables and PNGs; 1 under a dynamic shift).
    pub fn shift(&self) -> f64 {
        match *self {
            Scheduler::Sd3 { shift } => shift,
            Scheduler::Flux {
                dynamic: Some(_), ..
            } => 1.0,
            Scheduler::Flux { shift, .. } => shift,
        }
    }

    /// N + 1 sigmas for `steps` at an image of width x height pixels, and the dynamic
    /// shift's mu where there is one.
    pub fn sigmas(&self, steps: usize, width: usize, height: usize) -> (Vec<f64>, Option<f64>) {
        match *self {
            Scheduler::Sd3 { shift } => (sd3_sigmas(steps, shift), None),
            Scheduler::Flux { shift, dynamic } => {
                let mu = dynamic.map(|d| d.mu(width, height));
                (flux_sigmas(steps, mu, shift), mu)
            }
        }
    }
}

/// Where the weights go: `--offload` and what it decides from.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub offload: Offload,
    /// The device's memory (None: unknown; `auto` then keeps everything resident).
    pub device_memory: Option<u64>,
    /// The run's activations (see `TransformerConfig::activation_bytes`).
    pub activations: u64,
}

impl Placement {
    /// Everything resident, nothing printed (tests, benches, profiling).
    pub const RESIDENT: Placement = Placement {
        offload: Offload::Off,
        device_memory: None,
        activations: 0,
    };
}

pub enum Transformer<'w> {
    Mmdit(Mmdit),
    Flux(Flux<'w>),
}

/// Stream FLUX's blocks or not, saying why; refused before any upload when even one block,
/// the weights outside the blocks and the activations do not fit.
fn flux_residency(
    w: &WeightSet,
    json: Option<&serde_json::Value>,
    place: Placement,
) -> Result<bool> {
    let (config, keys): (FluxConfig, FluxKeys) = FluxConfig::resolve(w, json)?;
    let (_, bytes) = w.totals(keys.prefix());
    let residency = place.offload.decide(
        "FLUX transformer",
        bytes,
        place.activations,
        place.device_memory,
    );
    if residency.stream
        && let Some(device) = place.device_memory
    {
        let (largest, rest) = Flux::block_bytes(w, &keys, &config);
        let need = largest + rest + place.activations;
        if need > device {
            let size = crate::models::stream::size;
            return input(format!(
                "the FLUX transformer cannot run on this device even streaming its blocks: the \
                 largest block ({}), the weights outside the blocks ({}) and the activations ({}) \
                 need {}, the device has {}; use a smaller size or batch",
                size(largest),
                size(rest),
                size(place.activations),
                size(need),
                size(device)
            ));
        }
    }
    if place.offload != Offload::Off || place.device_memory.is_some() {
        eprintln!("{}", residency.reason);
    }
    Ok(residency.stream)
}

impl<'w> Transformer<'w> {
    /// Upload the transformer of `w` (`json`: its config.json, when there is one); FLUX's
    /// blocks stream from host memory when `place` says so (SD3 stays resident).
    pub fn load(
        gpu: &Gpu,
        w: &'w WeightSet,
        json: Option<&serde_json::Value>,
        place: Placement,
    ) -> Result<Transformer<'w>> {
        Ok(if is_flux(w) {
            let stream = flux_residency(w, json, place)?;
            Transformer::Flux(Flux::load(gpu, w, json, stream)?)
        } else {
            if place.offload == Offload::On {
                eprintln!(
                    "note: --offload streams FLUX's blocks and the text encoders; SD3's transformer stays resident"
                );
            }
            Transformer::Mmdit(Mmdit::load(gpu, w, json)?)
        })
    }

    pub fn config(&self) -> TransformerConfig {
        match self {
            Transformer::Mmdit(m) => TransformerConfig::Mmdit(m.config.clone()),
            Transformer::Flux(f) => TransformerConfig::Flux(f.config.clone()),
        }
    }

    pub fn check_latents(&self, shape: &[usize]) -> Result<()> {
        match self {
            Transformer::Mmdit(m) => m.check_latents(shape),
            Transformer::Flux(f) => f.check_latents(shape),
        }
    }

    /// Velocity for latents [B, C, H, W] at per-row levels. Under classifier-free guidance
    /// (`config().cfg(guidance)`) `text` holds B unconditional rows then B conditional ones
    /// (see `TextConditioning::stack`); FLUX.1-dev feeds `guidance` to its embedding.
    pub fn velocity(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        levels: &[f64],
        text: &TextConditioning,
        guidance: f64,
    ) -> Result<Tensor> {
        match self {
            Transformer::Mmdit(m) if guidance > 1.0 => {
                m.forward_guided(gpu, x, levels, text, guidance as f32)
            }
            Transformer::Mmdit(m) => m.forward(gpu, x, levels, text),
            Transformer::Flux(f) => f.forward(gpu, x, levels, text, guidance),
        }
    }
}
