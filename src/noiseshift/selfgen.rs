//! Calibration data the model makes itself (`calibrate --self N`): it is good at its native
//! resolution, so it generates N images there (prompts used in turn, image k from seed + k, the
//! uncalibrated schedule), each is downsampled to the target resolution exactly as an image
//! of `--images` would be (8-bit RGB, then `images::load::prepare`), and the VAE encodes them.
//! The prompts are the images' captions.

use image::RgbImage;
use noiseshift_kernels::Gpu;

use crate::error::{Result, input};
use crate::images::load::prepare;
use crate::images::to_rgb8;
use crate::models::joint::TextConditioning;
use crate::models::transformer::Transformer;
use crate::models::vae::Vae;
use crate::models::vae::tiling::{self, TilingMode};
use crate::noise::seeded_noise;
use crate::noiseshift::dataset::Dataset;
use crate::noiseshift::images::{encode_captions, latents};
use crate::progress::Progress;
use crate::sampler::{Plan, Prompts, sample};
use crate::tensor_file::{self, HostTensor};
use crate::text::prompt::PromptEncoder;

/// Varied everyday prompts for models trained on everyday images, when no --prompts is given.
pub const EVERYDAY: &[&str] = &[
    "a photo of a cat sleeping on a sofa",
    "a bowl of ramen on a wooden table",
    "a red bicycle leaning against a brick wall",
    "a mountain lake at sunrise",
    "a portrait of an old man with a grey beard",
    "a city street at night in the rain",
    "a bouquet of sunflowers in a glass vase",
    "a golden retriever running on a beach",
    "an astronaut floating above the earth",
    "a cup of coffee next to an open book",
    "a lighthouse on a rocky coast",
    "a plate of fresh fruit",
    "a small wooden cabin in a snowy forest",
    "a child flying a kite in a park",
    "a vintage car parked in front of a diner",
    "a close-up of a butterfly on a flower",
    "a modern kitchen with white cabinets",
    "a herd of elephants crossing a river",
    "a watercolor painting of a harbor",
    "a bowl of soup with bread",
    "a busy market with fruit stalls",
    "a pair of running shoes on grass",
    "a snowy owl on a branch",
    "a desert road under a starry sky",
];

pub struct SelfRequest<'a> {
    pub count: usize,
    pub prompts: &'a [String],
    /// Where the prompts came from, for the table.
    pub prompts_source: String,
    pub seed: u64,
    /// The native resolution the model generates at, and the target one.
    pub native: (usize, usize),
    pub target: (usize, usize),
    /// The native schedule's N + 1 sigmas (the model is conditioned on them: no calibration).
    pub sigmas: &'a [f64],
    pub shift: f64,
    pub guidance: f64,
    /// Images per sampling batch.
    pub batch: usize,
    pub tiling: TilingMode,
    /// Also encode the empty prompt as the negative (guidance during calibration).
    pub negative: bool,
}

/// Generate, downsample and encode the data set (`vae` with both halves).
pub fn dataset(
    gpu: &Gpu,
    model: &Transformer,
    vae: &Vae,
    encoder: &PromptEncoder<'_>,
    req: &SelfRequest<'_>,
) -> Result<Dataset> {
    if req.prompts.is_empty() {
        return input("--prompts holds no prompt");
    }
    let captions: Vec<Option<String>> = (0..req.count)
        .map(|k| Some(req.prompts[k % req.prompts.len()].clone()))
        .collect();
    let (embeds, pooled) = encode_captions(encoder, &captions)?;
    let (empty_e, empty_p) = encode_captions(encoder, &[None])?;
    let (nw, nh) = req.native;
    let (tw, th) = req.target;
    let channels = model.config().latent_channels();
    let steps = req.sigmas.len() - 1;
    let levels = &req.sigmas[..steps];
    let plan = Plan {
        sigmas: req.sigmas,
        levels,
        guidance: req.guidance,
    };
    let mut pixels = Vec::with_capacity(req.count * 3 * th * tw);
    let mut progress = Progress::new("self-generating", (req.count * steps) as u64);
    for start in (0..req.count).step_by(req.batch) {
        let rows: Vec<usize> = (start..(start + req.batch).min(req.count)).collect();
        let b = rows.len();
        let noise = seeded_noise(req.seed + start as u64, &[b, channels, nh / 8, nw / 8]);
        model.check_latents(&noise.shape)?;
        let up = |e: &HostTensor, p: &HostTensor, index: &[usize]| -> Result<TextConditioning> {
            Ok(TextConditioning {
                embeds: e.gather(index).upload(gpu)?,
                pooled: p.gather(index).upload(gpu)?,
            })
        };
        let prompts = Prompts {
            cond: up(&embeds, &pooled, &rows)?,
            uncond: Some(up(&empty_e, &empty_p, &vec![0; b])?),
        };
        let x = noise.upload(gpu)?;
        let label = format!("images {}..{} of {}", start + 1, start + b, req.count);
        let out = sample(gpu, model, &x, &prompts, &plan, |_| {
            gpu.finish()?;
            progress.advance(b as u64, &label);
            Ok(())
        })?;
        let lat = tensor_file::download(gpu, &out)?;
        let images = tiling::decode_planned(gpu, vae, &lat, req.tiling)?;
        for r in 0..b {
            let rgb = to_rgb8(&images, r);
            let img = RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
                .expect("to_rgb8 gives width x height x 3 bytes");
            pixels.extend(prepare(&img, tw, th).pixels);
        }
    }
    progress.finish();
    let images = HostTensor::new(vec![req.count, 3, th, tw], pixels);
    let x0 = latents(gpu, vae, &images, req.seed, false, req.tiling)?;
    let last = req.seed + req.count as u64 - 1;
    Ok(Dataset {
        noise: seeded_noise(req.seed, &x0.shape),
        x0,
        embeds,
        pooled,
        negative: req.negative.then_some((empty_e, empty_p)),
        description: format!(
            "self-generated: {} images at {nw}x{nh} (seeds {}..={last}, {steps} steps, shift {}, guidance {}) \
             from {} ({} prompts, used in turn), downsampled to {tw}x{th}, latent means",
            req.count,
            req.seed,
            req.shift,
            req.guidance,
            req.prompts_source,
            req.prompts.len()
        ),
    })
}
