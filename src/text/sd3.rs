//! SD3 / SD3.5 prompt embeddings, as diffusers' StableDiffusion3Pipeline.encode_prompt builds
//! them: [CLIP-L sequence ++ CLIP-G sequence (features), zero-padded to the joint width ;
//! T5 sequence (or zeros without T5)] along tokens, and pooled = CLIP-L pooled ++ CLIP-G pooled.

use noiseshift_kernels::Gpu;

use crate::error::{Result, input};
use crate::tensor_file::HostTensor;
use crate::text::encoders::{EncoderFiles, EncoderKind, RunOptions, encode};
use crate::text::prompt::PromptEmbeds;
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
        let find = |kind| EncoderFiles::locate(kind, false, model, single, config_root);
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
