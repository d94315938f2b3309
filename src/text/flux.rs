//! FLUX.1 prompt embeddings, as diffusers' FluxPipeline.encode_prompt builds them: the T5
//! sequence (text_encoder_2) as the tokens, CLIP-L's pooled output (text_encoder, no
//! projection) as the pooled vector.

use noiseshift_kernels::Gpu;

use crate::error::{Result, input};
use crate::tensor_file::HostTensor;
use crate::text::encoders::{EncoderFiles, EncoderKind, RunOptions, encode};
use crate::text::prompt::PromptEmbeds;
use crate::weights::{ModelPath, WeightSet};

pub struct FluxEncoders {
    pub clip_l: EncoderFiles,
    pub t5: EncoderFiles,
}

impl FluxEncoders {
    pub fn locate(
        model: &ModelPath,
        single: Option<&WeightSet>,
        config_root: Option<&std::path::Path>,
    ) -> Result<FluxEncoders> {
        // BFL's single files carry no text encoders: a FluxPipeline folder given as --config
        // lends its own (weights and tokenizers).
        let lender = match (single, config_root) {
            (Some(w), Some(root))
                if !w.names().any(|n| n.starts_with("text_encoders."))
                    && root.join("model_index.json").exists() =>
            {
                Some(ModelPath::resolve(root)?)
            }
            _ => None,
        };
        let (model, single) = match &lender {
            Some(folder) => (folder, None),
            None => (model, single),
        };
        let find = |kind| EncoderFiles::locate(kind, true, model, single, config_root);
        let (Some(clip_l), Some(t5)) = (find(EncoderKind::ClipL)?, find(EncoderKind::T5)?) else {
            return input(format!(
                "{} lacks FLUX's text encoders (text_encoder/ with tokenizer/ for CLIP-L, text_encoder_2/ with \
                 tokenizer_2/ for T5) that --prompt needs; use a diffusers FluxPipeline folder (as the model, or as \
                 --config beside a single file) or pass --embeds FILE",
                model.path.display()
            ));
        };
        Ok(FluxEncoders { clip_l, t5 })
    }

    /// Encode `prompts`; without T5 (`--no-t5`) its tokens are zeros.
    pub fn encode(
        &self,
        gpu: &Gpu,
        prompts: &[&str],
        joint_dim: usize,
        use_t5: bool,
        opts: RunOptions,
    ) -> Result<PromptEmbeds> {
        let clip = encode(gpu, &self.clip_l, prompts, opts)?;
        let b = prompts.len();
        let embeds = if use_t5 {
            encode(gpu, &self.t5, prompts, opts)?.sequence
        } else {
            HostTensor::new(
                vec![b, opts.t5_length, joint_dim],
                vec![0.0; b * opts.t5_length * joint_dim],
            )
        };
        if embeds.shape != [b, opts.t5_length, joint_dim] {
            return input(format!(
                "T5 output {:?} must be [{b}, {}, {joint_dim}] (the transformer's joint width)",
                embeds.shape, opts.t5_length
            ));
        }
        Ok(PromptEmbeds {
            embeds,
            pooled: clip.pooled()?.clone(),
        })
    }
}
