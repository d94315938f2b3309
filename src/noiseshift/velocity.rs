//! The MMDiT as the calibration engine's velocity model: rows carry their own noise level and
//! the text conditioning of their dataset sample (optionally with guidance).

use std::cell::RefCell;

use noiseshift_kernels::{Gpu, Tensor};

use crate::error::Result;
use crate::models::mmdit::{Mmdit, TextConditioning};
use crate::noiseshift::search::VelocityModel;
use crate::tensor_file::HostTensor;

pub struct MmditVelocity<'a> {
    pub model: &'a Mmdit,
    pub embeds: HostTensor,
    pub pooled: HostTensor,
    /// Negative conditioning and guidance scale, when calibrating with guidance.
    pub guidance: Option<(HostTensor, HostTensor, f64)>,
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

impl<'a> MmditVelocity<'a> {
    pub fn new(
        model: &'a Mmdit,
        embeds: HostTensor,
        pooled: HostTensor,
        guidance: Option<(HostTensor, HostTensor, f64)>,
    ) -> Self {
        MmditVelocity {
            model,
            embeds,
            pooled,
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
        if let Some((ne, np, _)) = &self.guidance {
            text = TextConditioning::stack(gpu, &upload(ne, np)?, &text)?;
        }
        *self.cache.borrow_mut() = Some((samples.to_vec(), text.clone()));
        Ok(text)
    }

    /// Rows per forward that keep every unsplit activation within one device binding (the
    /// fused qkv of the longer stream is the largest), capped at 64.
    pub fn default_batch(&self, gpu: &Gpu, latent_h: usize, latent_w: usize) -> usize {
        let c = &self.model.config;
        let image = (latent_h / c.patch) * (latent_w / c.patch);
        let tokens = image.max(self.embeds.shape[1]);
        let per_row = (tokens * 4 * c.hidden * 4) as u64;
        let guided = if self.guidance.is_some() { 2 } else { 1 };
        ((gpu.max_binding() / per_row.max(1)) as usize / guided).clamp(1, 64)
    }
}

impl VelocityModel for MmditVelocity<'_> {
    fn velocity(&self, gpu: &Gpu, x: &Tensor, levels: &[f64], samples: &[usize]) -> Result<Tensor> {
        let text = self.conditioning(gpu, samples)?;
        match &self.guidance {
            None => self.model.forward(gpu, x, levels, &text),
            Some((_, _, g)) => self.model.forward_guided(gpu, x, levels, &text, *g as f32),
        }
    }
}
