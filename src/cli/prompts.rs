//! The prompt flags of `generate` (and later `calibrate`): prompts run through the model's text
//! encoders, or precomputed embeddings from a file; either way host tensors that the sampler's
//! batch then repeats.

use std::path::{Path, PathBuf};

use noiseshift_kernels::Gpu;

use crate::error::{Error, Result, input};
use crate::models::joint::TextConditioning;
use crate::models::stream::Offload;
use crate::models::transformer::TransformerConfig;
use crate::sampler::Prompts;
use crate::tensor_file::{self, HostTensor};
use crate::text::encoders::RunOptions;
use crate::text::prompt::{PromptEmbeds, PromptEncoder};
use crate::weights::{ModelPath, WeightSet};

/// diffusers' limit on T5 tokens (SD3 and FLUX).
const MAX_T5_TOKENS: usize = 512;

#[derive(clap::Args, Clone)]
pub struct TextArgs {
    /// Text prompt, run through the model's text encoders (CLIP-L, CLIP-G and T5 for SD3; T5
    /// and CLIP-L for FLUX).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Negative prompt for guidance > 1 (default: the empty prompt, as diffusers).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Precomputed prompt embeddings instead of --prompt (safetensors: prompt_embeds [B, L, D],
    /// pooled_prompt_embeds [B, P], and for guidance > 1 negative_prompt_embeds,
    /// negative_pooled_prompt_embeds). Batch 1 is shared by every latent row. Wins over --prompt.
    #[arg(long)]
    pub embeds: Option<PathBuf>,
    /// Write the embeddings computed from --prompt here (the --embeds format), to reproduce a run.
    #[arg(long)]
    pub output_embeds: Option<PathBuf>,
    #[command(flatten)]
    pub encoders: EncoderArgs,
}

/// How the text encoders run (`generate --prompt`, `calibrate --images` captions).
#[derive(clap::Args, Clone)]
pub struct EncoderArgs {
    /// T5 tokens (1 to 512; without T5, the zero tokens that stand in for them). Longer prompts
    /// are truncated with a warning. Default: the model's own (noiseshift.json: the built-in
    /// model's 8), else diffusers' defaults: 256 for SD3 and FLUX.1-schnell, 512 for FLUX.1-dev.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_T5_TOKENS as u64))]
    pub max_sequence_length: Option<u64>,
    /// Leave T5 out: zeros for its tokens, exactly as diffusers does without text_encoder_3
    /// (automatic when the model has none).
    #[arg(long)]
    pub no_t5: bool,
    /// Where the text encoders' weights and FLUX's transformer blocks live while they run:
    /// `auto` streams a model layer by layer (block by block) from host memory when its weights
    /// and activations exceed the device's memory (Vulkan reports it;
    /// NOISESHIFT_DEVICE_MEMORY_GIB overrides), `on` always streams, `off` never. Each encoder is
    /// freed before the next model loads either way; SD3's transformer stays resident.
    #[arg(long, value_enum, default_value_t = Offload::Auto)]
    pub offload: Offload,
}

impl EncoderArgs {
    /// The encoders of `model` (`config_root`: `--config`, which gives a single file its
    /// tokenizers), saying whether T5 takes part.
    pub fn prompt_encoder<'a>(
        &self,
        gpu: &'a Gpu,
        model: &ModelPath,
        config_root: Option<&Path>,
        weights: &WeightSet,
        config: &TransformerConfig,
    ) -> Result<PromptEncoder<'a>> {
        let opts = RunOptions {
            t5_length: self
                .max_sequence_length
                .map(|n| n as usize)
                .or(model.defaults.max_sequence_length)
                .unwrap_or(config.defaults().max_sequence_length),
            offload: self.offload,
            device_memory: device_memory(gpu)?,
        };
        PromptEncoder::new(gpu, model, config_root, weights, config, self.no_t5, opts)
    }
}

/// Conditional and (for guidance) unconditional embeddings, one row each or one per latent row.
pub struct HostPrompts {
    pub cond: PromptEmbeds,
    pub uncond: Option<PromptEmbeds>,
}

impl HostPrompts {
    /// Upload, repeating a batch of 1 to `batch` rows.
    pub fn upload(&self, gpu: &Gpu, batch: usize) -> Result<Prompts> {
        let up = |p: &PromptEmbeds| -> Result<TextConditioning> {
            let rows = p.embeds.shape[0];
            let index: Vec<usize> = match rows {
                r if r == batch => (0..batch).collect(),
                1 => vec![0; batch],
                r => {
                    return input(format!(
                        "the embeddings have batch {r}; expected {batch} (the latents' batch) or 1"
                    ));
                }
            };
            Ok(TextConditioning {
                embeds: p.embeds.gather(&index).upload(gpu)?,
                pooled: p.pooled.gather(&index).upload(gpu)?,
            })
        };
        Ok(Prompts {
            cond: up(&self.cond)?,
            uncond: self.uncond.as_ref().map(up).transpose()?,
        })
    }

    /// Write the --embeds format.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(&str, &HostTensor)> = vec![
            ("prompt_embeds", &self.cond.embeds),
            ("pooled_prompt_embeds", &self.cond.pooled),
        ];
        if let Some(u) = &self.uncond {
            tensors.push(("negative_prompt_embeds", &u.embeds));
            tensors.push(("negative_pooled_prompt_embeds", &u.pooled));
        }
        tensor_file::write(path, &tensors)
    }
}

/// An embeddings file's conditional and (when guidance needs them) unconditional parts.
fn read_embeds(path: &Path, guided: bool) -> Result<HostPrompts> {
    let mut t = tensor_file::read(path)?;
    let mut pair = |embeds: &str, pooled: &str| -> Result<PromptEmbeds> {
        let e = tensor_file::take(&mut t, embeds, path)?;
        let p = tensor_file::take(&mut t, pooled, path)?;
        if e.shape.len() != 3 || p.shape.len() != 2 || e.shape[0] != p.shape[0] {
            return input(format!(
                "{}: {embeds} {:?} and {pooled} {:?} must be [B, L, D] and [B, P]",
                path.display(),
                e.shape,
                p.shape
            ));
        }
        Ok(PromptEmbeds {
            embeds: e,
            pooled: p,
        })
    };
    let cond = pair("prompt_embeds", "pooled_prompt_embeds")?;
    let uncond = if guided {
        Some(
            pair("negative_prompt_embeds", "negative_pooled_prompt_embeds").map_err(|e| {
                Error::Input(format!(
                    "guidance > 1 needs negative embeddings ({e}); add them or pass --guidance 1"
                ))
            })?,
        )
    } else {
        None
    };
    Ok(HostPrompts { cond, uncond })
}

/// The device's memory: NOISESHIFT_DEVICE_MEMORY_GIB, else what the adapter reports.
pub fn device_memory(gpu: &Gpu) -> Result<Option<u64>> {
    match std::env::var("NOISESHIFT_DEVICE_MEMORY_GIB") {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(g) if g.is_finite() && g > 0.0 => Ok(Some((g * (1u64 << 30) as f64) as u64)),
            _ => input(format!(
                "NOISESHIFT_DEVICE_MEMORY_GIB must be a positive number of GiB, got '{v}'"
            )),
        },
        Err(_) => Ok(gpu.adapter.device_memory),
    }
}

impl TextArgs {
    /// Whether this run needs the text encoders.
    pub fn encodes(&self) -> bool {
        self.embeds.is_none() && self.prompt.is_some()
    }

    /// Check what can be checked before any work: a conditioning source, outputs that make sense.
    pub fn check(&self) -> Result<()> {
        if self.embeds.is_some() && self.prompt.is_some() {
            eprintln!("note: --embeds is given, so --prompt and --negative-prompt are not encoded");
        }
        if self.embeds.is_none() && self.prompt.is_none() {
            return input(
                "no conditioning: pass --prompt TEXT (the model's text encoders) or --embeds FILE",
            );
        }
        if self.output_embeds.is_some() && !self.encodes() {
            return input(
                "--output-embeds writes what --prompt encodes; it needs --prompt without --embeds",
            );
        }
        Ok(())
    }

    /// The prompt embeddings of this run: from --embeds, else from the encoders of `model`
    /// (`config_root`: `--config`, which gives a single file its tokenizers).
    pub fn host_prompts(
        &self,
        gpu: &Gpu,
        model: &ModelPath,
        config_root: Option<&Path>,
        weights: &WeightSet,
        config: &TransformerConfig,
        guided: bool,
    ) -> Result<HostPrompts> {
        if let Some(path) = &self.embeds {
            return read_embeds(path, guided);
        }
        let prompt = self.prompt.as_deref().unwrap_or_default();
        let negative = self.negative_prompt.as_deref().unwrap_or("");
        let mut prompts = vec![prompt];
        if guided {
            prompts.push(negative);
        }
        let all = self
            .encoders
            .prompt_encoder(gpu, model, config_root, weights, config)?
            .encode(&prompts)?;
        let host = HostPrompts {
            cond: all.rows(0..1),
            uncond: guided.then(|| all.rows(1..2)),
        };
        if let Some(path) = &self.output_embeds {
            host.write(path)?;
            eprintln!("wrote {}", path.display());
        }
        Ok(host)
    }
}
