//! SD3 / SD3.5 prompt embeddings, as diffusers' StableDiffusion3Pipeline.encode_prompt builds
//! them: [CLIP-L sequence ++ CLIP-G sequence (features), zero-padded to the joint width ;
//! T5 sequence (or zeros without T5)] along tokens, and pooled = CLIP-L pooled ++ CLIP-G pooled.

use noiseshift_kernels::Gpu;

use crate::error::{Result, input};
use crate::models::mmdit::MmditConfig;
use crate::tensor_file::HostTensor;
use crate::text::encoders::{EncoderFiles, EncoderKind, RunOptions, encode};
use crate::weights::discover::Layout;
use crate::weights::{ModelPath, WeightSet};

/// The three encoders of an SD3 model (T5 may be absent).
pub struct Sd3Encoders {
    pub clip_l: EncoderFiles,
    pub clip_g: EncoderFiles,
    pub t5: Option<EncoderFiles>,
}

impl Sd3Encoders {
    /// The encoders of `model` (`single`: the checkpoint's tensors when it is a single file;
    /// `config_root`: the pipeline folder that gives a single file its tokenizers and configs).
    pub fn locate(
        model: &ModelPath,
        single: Option<&WeightSet>,
        config_root: Option<&std::path::Path>,
    ) -> Result<Sd3Encoders> {
        let find = |kind| EncoderFiles::locate(kind, model, single, config_root);
        let (Some(clip_l), Some(clip_g)) = (find(EncoderKind::ClipL)?, find(EncoderKind::ClipG)?)
        else {
            return input(format!(
                "{} lacks the CLIP text encoders (text_encoder/ and text_encoder_2/, or text_encoders.clip_l/clip_g \
                 tensors) that --prompt needs; pass --embeds FILE instead",
                model.path.display()
            ));
        };
        Ok(Sd3Encoders {
            clip_l,
            clip_g,
            t5: find(EncoderKind::T5)?,
        })
    }
}

/// Prompt embeddings [B, L, D] and pooled [B, P] on the host.
pub struct PromptEmbeds {
    pub embeds: HostTensor,
    pub pooled: HostTensor,
}

impl PromptEmbeds {
    /// Rows `range` of both.
    pub fn rows(&self, range: std::ops::Range<usize>) -> PromptEmbeds {
        PromptEmbeds {
            embeds: self.embeds.rows(range.clone()),
            pooled: self.pooled.rows(range),
        }
    }
}

/// A model's prompt encoder, ready to run batches of prompts.
pub struct PromptEncoder<'a> {
    gpu: &'a Gpu,
    encoders: Sd3Encoders,
    use_t5: bool,
    joint_dim: usize,
    pooled_dim: usize,
    opts: RunOptions,
}

impl<'a> PromptEncoder<'a> {
    /// The encoders of `model` (`single` files take tokenizers and configs from
    /// `config_root`), saying whether T5 takes part.
    pub fn new(
        gpu: &'a Gpu,
        model: &ModelPath,
        config_root: Option<&std::path::Path>,
        weights: &WeightSet,
        config: &MmditConfig,
        no_t5: bool,
        opts: RunOptions,
    ) -> Result<PromptEncoder<'a>> {
        let single = (model.layout == Layout::SingleFile).then_some(weights);
        let encoders = Sd3Encoders::locate(model, single, config_root)?;
        let use_t5 = match (&encoders.t5, no_t5) {
            (None, _) => {
                eprintln!(
                    "text: the model has no T5 encoder; its tokens are zeros, as diffusers does"
                );
                false
            }
            (Some(_), true) => {
                eprintln!(
                    "text: --no-t5: T5 tokens are zeros, as diffusers does without text_encoder_3"
                );
                false
            }
            (Some(_), false) => true,
        };
        Ok(PromptEncoder {
            gpu,
            encoders,
            use_t5,
            joint_dim: config.joint_attention_dim,
            pooled_dim: config.pooled_dim,
            opts,
        })
    }

    /// Embeddings of `prompts`, one row each.
    pub fn encode(&self, prompts: &[&str]) -> Result<PromptEmbeds> {
        let all = encode_prompts(
            self.gpu,
            &self.encoders,
            prompts,
            self.joint_dim,
            self.use_t5,
            self.opts,
        )?;
        if all.pooled.shape[1] != self.pooled_dim {
            return input(format!(
                "the CLIP encoders' pooled widths add up to {}, but the transformer takes {}",
                all.pooled.shape[1], self.pooled_dim
            ));
        }
        Ok(all)
    }
}

/// Encode `prompts` (one batch through each encoder, one at a time on the device). `use_t5`
/// false (or no T5 in the model) gives zeros for the T5 part, as diffusers does.
pub fn encode_prompts(
    gpu: &Gpu,
    encoders: &Sd3Encoders,
    prompts: &[&str],
    joint_dim: usize,
    use_t5: bool,
    opts: RunOptions,
) -> Result<PromptEmbeds> {
    let l = encode(gpu, &encoders.clip_l, prompts, opts)?;
    let g = encode(gpu, &encoders.clip_g, prompts, opts)?;
    let t5 = match (&encoders.t5, use_t5) {
        (Some(files), true) => Some(encode(gpu, files, prompts, opts)?.sequence),
        _ => None,
    };
    assemble(
        &l.sequence,
        &g.sequence,
        t5.as_ref(),
        l.pooled()?,
        g.pooled()?,
        joint_dim,
        opts.t5_length,
    )
}

/// The assembly itself, on host tensors (B rows each).
pub fn assemble(
    clip_l: &HostTensor,
    clip_g: &HostTensor,
    t5: Option<&HostTensor>,
    pooled_l: &HostTensor,
    pooled_g: &HostTensor,
    joint_dim: usize,
    t5_length: usize,
) -> Result<PromptEmbeds> {
    let [b, n, dl] = clip_l.shape[..] else {
        return input("CLIP-L sequence must be [B, L, D]");
    };
    let dg = clip_g.shape[2];
    if clip_g.shape[..2] != [b, n] {
        return input(format!(
            "CLIP-G sequence {:?} does not match CLIP-L's {:?}",
            clip_g.shape, clip_l.shape
        ));
    }
    if dl + dg > joint_dim {
        return input(format!(
            "CLIP-L and CLIP-G widths {dl} + {dg} exceed the transformer's joint width {joint_dim}"
        ));
    }
    let t5_tokens = match t5 {
        Some(t) if t.shape != [b, t5_length, joint_dim] => {
            return input(format!(
                "T5 output {:?} must be [{b}, {t5_length}, {joint_dim}] (the transformer's joint width)",
                t.shape
            ));
        }
        _ => t5_length,
    };
    let tokens = n + t5_tokens;
    let mut embeds = vec![0.0f32; b * tokens * joint_dim];
    for r in 0..b {
        for i in 0..n {
            let dst = &mut embeds[(r * tokens + i) * joint_dim..][..dl + dg];
            dst[..dl].copy_from_slice(&clip_l.data[(r * n + i) * dl..][..dl]);
            dst[dl..].copy_from_slice(&clip_g.data[(r * n + i) * dg..][..dg]);
        }
        if let Some(t) = t5 {
            let src = &t.data[r * t5_tokens * joint_dim..][..t5_tokens * joint_dim];
            embeds[(r * tokens + n) * joint_dim..][..t5_tokens * joint_dim].copy_from_slice(src);
        }
    }
    let (pl, pg) = (pooled_l.shape[1], pooled_g.shape[1]);
    let pooled = (0..b)
        .flat_map(|r| {
            pooled_l.data[r * pl..(r + 1) * pl]
                .iter()
                .chain(&pooled_g.data[r * pg..(r + 1) * pg])
                .copied()
        })
        .collect();
    Ok(PromptEmbeds {
        embeds: HostTensor::new(vec![b, tokens, joint_dim], embeds),
        pooled: HostTensor::new(vec![b, pl + pg], pooled),
    })
}
