//! The transformer as the calibration engine's velocity model: rows carry their own noise
//! level and the text conditioning of their dataset sample (optionally with guidance:
//! SD3's classifier-free guidance with negative conditioning, FLUX.1-dev's embedded value).

use std::cell::RefCell;

use noiseshift_kernels::{Gpu, Tensor};

use crate::error::Result;
use crate::models::joint::TextConditioning;
use crate::models::transformer::Transformer;
use crate::noiseshift::search::VelocityModel;
use crate::tensor_file::HostTensor;

pub struct TransformerVelocity<'a> {
    pub model: &'a Transformer<'a>,
    pub embeds: HostTensor,
    pub pooled: HostTensor,
    /// Negative conditioning, when calibrating with classifier-free guidance.
    pub negative: Option<(HostTensor, HostTensor)>,
    /// The guidance scale (classifier-free with `negative`, or FLUX.1-dev's input).
    pub guidance: f64,
    /// The conditioning of the last row layout: the search repeats the same layout per stage.
    cache: RefCell<Option<(Vec<usize>, TextConditioning)>>,
}

/// Rows of `t` for `samples` (row 0 for every sample when `t` is shared).
fn rows(t: &HostTensor, samples: &[usize]) -> HostTensor {
    if t.shape[0] == 1 {
        t.gather(&vec![0; samples.len()])
    } else {
        t.gather(samples)
    }
}

impl<'a> TransformerVelocity<'a> {
    pub fn new(
        model: &'a Transformer<'a>,
        embeds: HostTensor,
        pooled: HostTensor,
        negative: Option<(HostTensor, HostTensor)>,
        guidance: f64,
    ) -> Self {
        TransformerVelocity {
            model,
            embeds,
            pooled,
            negative,
            guidance,
            cache: RefCell::new(None),
        }
    }

    fn conditioning(&self, gpu: &Gpu, samples: &[usize]) -> Result<TextConditioning> {
        if let Some((key, text)) = self.cache.borrow().as_ref()
            && key == samples
        {
            return Ok(text.clone());
        }
        let upload = |e: &HostTensor, p: &HostTensor| -> Result<TextConditioning> {
            Ok(TextConditioning {
                embeds: rows(e, samples).upload(gpu)?,
                pooled: rows(p, samples).upload(gpu)?,
            })
        };
        let mut text = upload(&self.embeds, &self.pooled)?;
        if let Some((ne, np)) = &self.negative {
            text = TextConditioning::stack(gpu, &upload(ne, np)?, &text)?;
        }
        *self.cache.borrow_mut() = Some((samples.to_vec(), text.clone()));
        Ok(text)
    }

    /// Rows per forward that keep every unsplit activation within one device binding (the
    /// fused qkv of the longer stream is the largest), capped at 64.
    pub fn default_batch(&self, gpu: &Gpu, latent_h: usize, latent_w: usize) -> usize {
        let (image, hidden) = self.model.config().tokens_and_width(latent_h, latent_w);
        // FLUX's single-stream blocks hold both streams' tokens, 7 widths wide.
        let (tokens, widths) = match self.model {
            Transformer::Mmdit(_) => (image.max(self.embeds.shape[1]), 4),
            Transformer::Flux(_) => (image + self.embeds.shape[1], 7),
        };
        let per_row = (tokens * widths * hidden * 4) as u64;
        let guided = if self.negative.is_some() { 2 } else { 1 };
        ((gpu.max_binding() / per_row.max(1)) as usize / guided).clamp(1, 64)
    }
}

impl VelocityModel for TransformerVelocity<'_> {
    fn velocity(&self, gpu: &Gpu, x: &Tensor, levels: &[f64], samples: &[usize]) -> Result<Tensor> {
        let text = self.conditioning(gpu, samples)?;
        // Without negative conditioning an SD3 scale must not ask for a guided pass.
        let guidance = match (&self.negative, self.model) {
            (None, Transformer::Mmdit(_)) => 1.0,
            _ => self.guidance,
        };
        self.model.velocity(gpu, x, levels, &text, guidance)
    }
}
