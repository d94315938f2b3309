//! A model's prompt encoder, whatever its family: SD3's three encoders or FLUX's T5 and CLIP-L,
//! found in the model's files, run on batches of prompts, assembled as the family's pipeline
//! assembles them.

use noiseshift_kernels::Gpu;

use crate::error::{Result, input};
use crate::models::transformer::TransformerConfig;
use crate::tensor_file::HostTensor;
use crate::text::encoders::RunOptions;
use crate::text::flux::FluxEncoders;
use crate::text::sd3::{self, Sd3Encoders};
use crate::weights::discover::Layout;
use crate::weights::{ModelPath, WeightSet};

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

enum Encoders {
    Sd3(Sd3Encoders),
    Flux(FluxEncoders),
}

/// A model's prompt encoder, ready to run batches of prompts.
pub struct PromptEncoder<'a> {
    gpu: &'a Gpu,
    encoders: Encoders,
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
        config: &TransformerConfig,
        no_t5: bool,
        opts: RunOptions,
    ) -> Result<PromptEncoder<'a>> {
        let single = (model.layout == Layout::SingleFile).then_some(weights);
        let encoders = match config {
            TransformerConfig::Mmdit(_) => {
                Encoders::Sd3(Sd3Encoders::locate(model, single, config_root)?)
            }
            TransformerConfig::Flux(_) => {
                Encoders::Flux(FluxEncoders::locate(model, single, config_root)?)
            }
        };
        let has_t5 = match &encoders {
            Encoders::Sd3(e) => e.t5.is_some(),
            Encoders::Flux(_) => true,
        };
        let use_t5 = match (has_t5, no_t5) {
            (false, _) => {
                eprintln!(
                    "text: the model has no T5 encoder; its tokens are zeros, as diffusers does"
                );
                false
            }
            (true, true) => {
                eprintln!(
                    "text: --no-t5: T5 tokens are zeros (diffusers' SD3 without text_encoder_3)"
                );
                false
            }
            (true, false) => true,
        };
        let (joint_dim, pooled_dim) = config.text_dims();
        Ok(PromptEncoder {
            gpu,
            encoders,
            use_t5,
            joint_dim,
            pooled_dim,
            opts,
        })
    }

    /// Embeddings of `prompts`, one row each.
    pub fn encode(&self, prompts: &[&str]) -> Result<PromptEmbeds> {
        let (gpu, opts) = (self.gpu, self.opts);
        let all = match &self.encoders {
            Encoders::Sd3(e) => {
                sd3::encode_prompts(gpu, e, prompts, self.joint_dim, self.use_t5, opts)?
            }
            Encoders::Flux(e) => e.encode(gpu, prompts, self.joint_dim, self.use_t5, opts)?,
        };
        if all.pooled.shape[1] != self.pooled_dim {
            return input(format!(
                "the CLIP encoders' pooled widths add up to {}, but the transformer takes {}",
                all.pooled.shape[1], self.pooled_dim
            ));
        }
        Ok(all)
    }
}
