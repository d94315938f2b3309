//! The AutoencoderKL of SD3 and FLUX (16 latent channels, /8), as op calls: encoder and
//! decoder of ResNet levels with a mid block (ResNet, single-head attention, ResNet), stride-2
//! downsampling with diffusers' (0, 1, 0, 1) padding, nearest x2 upsampling + conv, optional
//! quant convs, and the latent scale and shift of the config. Loads diffusers `vae/` folders,
//! original single files (`first_stage_model.*`, LDM names) and FLUX's `ae.safetensors`.

pub mod blocks;
pub mod config;
pub mod keys;
pub mod locate;
pub mod tiling;

use noiseshift_kernels::ops::conv::ConvGeometry;
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Tensor};

pub use config::VaeConfig;
pub use keys::VaeKeys;

use crate::error::{Result, input};
use crate::weights::WeightSet;
use blocks::{Attention, Conv, Norm, Resnet};
use keys::{Block, Side};

/// Mid block: ResNet, attention (when the config has it), ResNet.
struct Mid {
    first: Resnet,
    attention: Option<Attention>,
    second: Resnet,
}

impl Mid {
    fn load(gpu: &Gpu, w: &WeightSet, keys: &VaeKeys, side: Side, cfg: &VaeConfig) -> Result<Mid> {
        let c = *cfg.block_out_channels.last().expect("checked non-empty");
        let g = cfg.norm_num_groups;
        Ok(Mid {
            first: Resnet::load(gpu, w, keys, side, Block::Mid(0), c, c, g)?,
            attention: if cfg.mid_attention {
                Some(Attention::load(gpu, w, keys, side, c, g)?)
            } else {
                None
            },
            second: Resnet::load(gpu, w, keys, side, Block::Mid(1), c, c, g)?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
        let mut h = self.first.forward(gpu, x)?;
        if let Some(a) = &self.attention {
            h = a.forward(gpu, &h)?;
        }
        self.second.forward(gpu, &h)
    }
}

/// One level: its ResNet blocks, then the resampling conv (all but the last level).
struct Level {
    resnets: Vec<Resnet>,
    sampler: Option<Conv>,
}

pub struct Encoder {
    conv_in: Conv,
    levels: Vec<Level>,
    mid: Mid,
    norm_out: Norm,
    conv_out: Conv,
    quant: Option<Conv>,
}

impl Encoder {
    fn load(gpu: &Gpu, w: &WeightSet, keys: &VaeKeys, cfg: &VaeConfig) -> Result<Encoder> {
        let ch = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let side = Side::Encoder;
        let mut levels = Vec::new();
        let mut cin = ch[0];
        for (i, &cout) in ch.iter().enumerate() {
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let from = if j == 0 { cin } else { cout };
                    Resnet::load(gpu, w, keys, side, Block::Level(i, j), from, cout, g)
                })
                .collect::<Result<Vec<_>>>()?;
            // Stride 2 after padding right and bottom by one (diffusers' Downsample2D, padding 0).
            let down = ConvGeometry {
                kernel: [3, 3],
                stride: 2,
                pad: [0, 0, 1, 1],
            };
            let sampler = if i + 1 < ch.len() {
                Some(Conv::load(
                    gpu,
                    w,
                    &keys.sampler(side, i),
                    [cout, cout, 3],
                    down,
                )?)
            } else {
                None
            };
            levels.push(Level { resnets, sampler });
            cin = cout;
        }
        let last = *ch.last().expect("checked non-empty");
        let moments = 2 * cfg.latent_channels;
        Ok(Encoder {
            conv_in: Conv::same(gpu, w, &keys.conv_in(side), cfg.in_channels, ch[0])?,
            levels,
            mid: Mid::load(gpu, w, keys, side, cfg)?,
            norm_out: Norm::load(gpu, w, &keys.norm_out(side), last, g)?,
            conv_out: Conv::same(gpu, w, &keys.conv_out(side), last, moments)?,
            quant: if cfg.use_quant_conv {
                Some(Conv::pointwise(
                    gpu,
                    w,
                    &keys.quant(false),
                    moments,
                    moments,
                )?)
            } else {
                None
            },
        })
    }

    /// Image [B, C, H, W] in [-1, 1] -> moments [B, 2 latent channels, H/f, W/f].
    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(gpu, x)?;
        for level in &self.levels {
            for r in &level.resnets {
                h = r.forward(gpu, &h)?;
            }
            if let Some(s) = &level.sampler {
                h = s.forward(gpu, &h)?;
            }
        }
        h = self.mid.forward(gpu, &h)?;
        h = self.norm_out.forward(gpu, &h, Act::Silu)?;
        h = self.conv_out.forward(gpu, &h)?;
        match &self.quant {
            Some(q) => q.forward(gpu, &h),
            None => Ok(h),
        }
    }
}

pub struct Decoder {
    post_quant: Option<Conv>,
    conv_in: Conv,
    mid: Mid,
    levels: Vec<Level>,
    norm_out: Norm,
    conv_out: Conv,
}

impl Decoder {
    fn load(gpu: &Gpu, w: &WeightSet, keys: &VaeKeys, cfg: &VaeConfig) -> Result<Decoder> {
        let ch: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let g = cfg.norm_num_groups;
        let side = Side::Decoder;
        let mut levels = Vec::new();
        let mut cin = ch[0];
        for (i, &cout) in ch.iter().enumerate() {
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| {
                    let from = if j == 0 { cin } else { cout };
                    Resnet::load(gpu, w, keys, side, Block::Level(i, j), from, cout, g)
                })
                .collect::<Result<Vec<_>>>()?;
            let sampler = if i + 1 < ch.len() {
                Some(Conv::same(gpu, w, &keys.sampler(side, i), cout, cout)?)
            } else {
                None
            };
            levels.push(Level { resnets, sampler });
            cin = cout;
        }
        let last = *ch.last().expect("checked non-empty");
        let lc = cfg.latent_channels;
        Ok(Decoder {
            post_quant: if cfg.use_post_quant_conv {
                Some(Conv::pointwise(gpu, w, &keys.quant(true), lc, lc)?)
            } else {
                None
            },
            conv_in: Conv::same(gpu, w, &keys.conv_in(side), lc, ch[0])?,
            mid: Mid::load(gpu, w, keys, side, cfg)?,
            levels,
            norm_out: Norm::load(gpu, w, &keys.norm_out(side), last, g)?,
            conv_out: Conv::same(gpu, w, &keys.conv_out(side), last, cfg.out_channels)?,
        })
    }

    /// z [B, latent channels, h, w] -> image [B, C, f h, f w] (about [-1, 1]).
    fn forward(&self, gpu: &Gpu, z: &Tensor) -> Result<Tensor> {
        let mut h = match &self.post_quant {
            Some(p) => self.conv_in.forward(gpu, &p.forward(gpu, z)?)?,
            None => self.conv_in.forward(gpu, z)?,
        };
        h = self.mid.forward(gpu, &h)?;
        for level in &self.levels {
            for r in &level.resnets {
                h = r.forward(gpu, &h)?;
            }
            if let Some(s) = &level.sampler {
                h = ops::resample::upsample_nearest2x(gpu, &h)?;
                h = s.forward(gpu, &h)?;
            }
        }
        h = self.norm_out.forward(gpu, &h, Act::Silu)?;
        self.conv_out.forward(gpu, &h)
    }
}

/// Which halves of the autoencoder to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parts {
    Decoder,
    Encoder,
    Both,
}

pub struct Vae {
    pub config: VaeConfig,
    pub keys: VaeKeys,
    encoder: Option<Encoder>,
    decoder: Option<Decoder>,
}

impl Vae {
    /// Upload the parts asked for (weights in their stored dtype).
    pub fn load(
        gpu: &Gpu,
        w: &WeightSet,
        keys: &VaeKeys,
        config: VaeConfig,
        parts: Parts,
    ) -> Result<Vae> {
        let keys = keys.clone().with_levels(config.block_out_channels.len());
        let encoder = match parts {
            Parts::Encoder | Parts::Both => Some(Encoder::load(gpu, w, &keys, &config)?),
            Parts::Decoder => None,
        };
        let decoder = match parts {
            Parts::Decoder | Parts::Both => Some(Decoder::load(gpu, w, &keys, &config)?),
            Parts::Encoder => None,
        };
        gpu.finish()?;
        Ok(Vae {
            config,
            keys,
            encoder,
            decoder,
        })
    }

    /// Check latents [B, C, h, w] against the config.
    pub fn check_latents(&self, shape: &[usize]) -> Result<()> {
        match *shape {
            [b, c, h, w] if b > 0 && h > 0 && w > 0 && c == self.config.latent_channels => Ok(()),
            _ => input(format!(
                "latents {shape:?} must be [B, {}, h, w] for this VAE",
                self.config.latent_channels
            )),
        }
    }

    /// Model latents (scaled) -> image [B, out channels, f h, f w] in about [-1, 1]:
    /// z = latents / scale + shift, then the decoder.
    pub fn decode(&self, gpu: &Gpu, latents: &Tensor) -> Result<Tensor> {
        let Some(decoder) = &self.decoder else {
            return input("this VAE was loaded without its decoder");
        };
        self.check_latents(latents.shape())?;
        let c = &self.config;
        let z = ops::elementwise::affine(
            gpu,
            latents,
            (1.0 / c.scaling_factor) as f32,
            c.shift_factor as f32,
        )?;
        decoder.forward(gpu, &z)
    }

    /// Image [B, in channels, H, W] in [-1, 1] (H, W multiples of the factor) -> the latent
    /// distribution's (mean, logvar), each [B, latent channels, H/f, W/f], unscaled.
    pub fn encode_moments(&self, gpu: &Gpu, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some(encoder) = &self.encoder else {
            return input("this VAE has no encoder weights");
        };
        let c = &self.config;
        let f = c.factor();
        match *image.shape() {
            [b, ch, h, w]
                if b > 0 && ch == c.in_channels && h > 0 && w > 0 && h % f == 0 && w % f == 0 => {}
            ref s => {
                return input(format!(
                    "images {s:?} must be [B, {}, H, W] with H and W positive multiples of {f}",
                    c.in_channels
                ));
            }
        }
        let moments = encoder.forward(gpu, image)?;
        let [b, _, h, w] = *moments.shape() else {
            unreachable!("conv output is 4D")
        };
        let lc = c.latent_channels;
        // Moments hold mean then logvar along channels: the two halves of each sample.
        let both = moments.reshape(&[b, 2, lc * h * w])?;
        let halves = ops::layout::split_tokens(gpu, &both, 1)?;
        Ok((
            halves.0.reshape(&[b, lc, h, w])?,
            halves.1.reshape(&[b, lc, h, w])?,
        ))
    }

    /// Model latents from unscaled ones: (z - shift) * scale.
    pub fn scale_latents(&self, gpu: &Gpu, z: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        Ok(ops::elementwise::affine(
            gpu,
            z,
            c.scaling_factor as f32,
            (-c.shift_factor * c.scaling_factor) as f32,
        )?)
    }
}
