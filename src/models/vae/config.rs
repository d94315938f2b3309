//! AutoencoderKL hyper-parameters: from a diffusers `vae/config.json`, or inferred from the
//! weights' shapes for single files, with the latent scale and shift (which no shape reveals)
//! taken from the checkpoint's family. `inferred` lists what did not come from a config.

use serde::Serialize;

use crate::error::{Error, Result, input};
use crate::models::vae::keys::{AttnPart, Block, Side, VaeKeys};
use crate::weights::WeightSet;

/// Latent scale and shift of the SD3 VAE, and of FLUX's.
pub const SD3_SCALE_SHIFT: (f64, f64) = (1.5305, 0.0609);
pub const FLUX_SCALE_SHIFT: (f64, f64) = (0.3611, 0.1159);
/// diffusers' defaults for a config.json without them.
pub const DIFFUSERS_SCALE_SHIFT: (f64, f64) = (0.18215, 0.0);

#[derive(Clone, Debug, Serialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    /// Model latents = (z - shift) * scale.
    pub scaling_factor: f64,
    pub shift_factor: f64,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_attention: bool,
    /// Values not read from a config.json, with how they were found.
    pub inferred: Vec<String>,
}

impl VaeConfig {
    /// Pixels per latent along each side: 2^(levels - 1).
    pub fn factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// `default_scale_shift` stands in for a config without `scaling_factor` / `shift_factor`
    /// (diffusers' 0.18215 and 0 for folders; the family's for a single file's given config).
    pub fn from_json(
        json: &serde_json::Value,
        default_scale_shift: (f64, f64),
    ) -> Result<VaeConfig> {
        let get = |k: &str, default: usize| -> usize {
            json.get(k)
                .and_then(|v| v.as_u64())
                .map_or(default, |v| v as usize)
        };
        let flag =
            |k: &str, default: bool| json.get(k).and_then(|v| v.as_bool()).unwrap_or(default);
        let channels: Vec<usize> = json
            .get("block_out_channels")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|x| x as usize))
                    .collect()
            })
            .ok_or_else(|| Error::Input("vae config.json lacks 'block_out_channels'".into()))?;
        for (key, want) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            if let Some(types) = json.get(key).and_then(|v| v.as_array())
                && (types.len() != channels.len() || types.iter().any(|t| t.as_str() != Some(want)))
            {
                return input(format!(
                    "vae config.json: {key} must be {} x {want}, got {types:?}",
                    channels.len()
                ));
            }
        }
        for key in ["latents_mean", "latents_std"] {
            if json.get(key).is_some_and(|v| !v.is_null()) {
                return input(format!(
                    "vae config.json: per-channel {key} is not supported"
                ));
            }
        }
        // A null shift_factor is diffusers' "no shift"; a missing key takes the default.
        let number = |k: &str, default: f64| match json.get(k) {
            Some(serde_json::Value::Null) => 0.0,
            Some(v) => v.as_f64().unwrap_or(default),
            None => default,
        };
        let mut inferred = Vec::new();
        for key in ["scaling_factor", "shift_factor"] {
            if json.get(key).is_none() {
                inferred.push(format!(
                    "{key}: not in the config, {default_scale_shift:?} used"
                ));
            }
        }
        let cfg = VaeConfig {
            in_channels: get("in_channels", 3),
            out_channels: get("out_channels", 3),
            latent_channels: get("latent_channels", 4),
            block_out_channels: channels,
            layers_per_block: get("layers_per_block", 1),
            norm_num_groups: get("norm_num_groups", 32),
            scaling_factor: number("scaling_factor", default_scale_shift.0),
            shift_factor: number("shift_factor", default_scale_shift.1),
            use_quant_conv: flag("use_quant_conv", true),
            use_post_quant_conv: flag("use_post_quant_conv", true),
            mid_attention: flag("mid_block_add_attention", true),
            inferred,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Infer from the shapes: levels and widths from the ResNet blocks, layers per block from
    /// the encoder's first level (the decoder's has one more), channels from the outer convs,
    /// quant convs and attention from the keys present. GroupNorm's group count leaves no
    /// trace in the weights: 32, as in every SD, SD3 and FLUX VAE.
    pub fn infer(
        w: &WeightSet,
        keys: &VaeKeys,
        scale_shift: (f64, f64),
        family: &str,
    ) -> Result<VaeConfig> {
        let conv1 = |s: Side, b: Block| format!("{}.conv1.weight", keys.resnet(s, b));
        let encoder = w.contains(&conv1(Side::Encoder, Block::Level(0, 0)));
        let side = if encoder {
            Side::Encoder
        } else {
            Side::Decoder
        };
        let levels = (0..)
            .take_while(|&i| w.contains(&conv1(side, Block::Level(i, 0))))
            .count();
        if levels == 0 {
            return input("no VAE ResNet blocks found in the weights");
        }
        let keys = keys.clone().with_levels(levels);
        let out_of = |name: String| -> Result<usize> {
            let t = w.get(&name)?;
            Ok(t.shape[0])
        };
        let mut channels = (0..levels)
            .map(|i| out_of(conv1(side, Block::Level(i, 0))))
            .collect::<Result<Vec<_>>>()?;
        if side == Side::Decoder {
            channels.reverse();
        }
        let resnets = (0..)
            .take_while(|&j| w.contains(&conv1(side, Block::Level(0, j))))
            .count();
        let layers_per_block = if encoder { resnets } else { resnets - 1 };
        let dec_in = format!("{}.weight", keys.conv_in(Side::Decoder));
        let latent_channels = match w.get(&dec_in) {
            Ok(t) => t.shape.get(1).copied().unwrap_or(0),
            Err(_) => out_of(format!("{}.weight", keys.conv_out(Side::Encoder)))? / 2,
        };
        let in_channels = match w.get(&format!("{}.weight", keys.conv_in(Side::Encoder))) {
            Ok(t) => t.shape.get(1).copied().unwrap_or(0),
            Err(_) => 3,
        };
        let out_channels = match w.get(&format!("{}.weight", keys.conv_out(Side::Decoder))) {
            Ok(t) => t.shape[0],
            Err(_) => 3,
        };
        let attn = format!("{}.weight", keys.attn(side, AttnPart::Norm));
        let cfg = VaeConfig {
            in_channels,
            out_channels,
            latent_channels,
            block_out_channels: channels,
            layers_per_block,
            norm_num_groups: 32,
            scaling_factor: scale_shift.0,
            shift_factor: scale_shift.1,
            use_quant_conv: w.contains(&format!("{}.weight", keys.quant(false))),
            use_post_quant_conv: w.contains(&format!("{}.weight", keys.quant(true))),
            mid_attention: w.contains(&attn),
            inferred: vec![
                "block_out_channels, layers_per_block, latent/in/out channels, quant convs, attention: from the weights' shapes".into(),
                "norm_num_groups: 32 (not visible in the weights)".into(),
                format!(
                    "scaling_factor {}, shift_factor {}: the {family} VAE's",
                    scale_shift.0, scale_shift.1
                ),
            ],
        };
        cfg.check().map_err(|e| {
            Error::Input(format!(
                "{e} (inferred from the weights; pass --config with the VAE's config.json)"
            ))
        })?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        let g = self.norm_num_groups;
        if self.block_out_channels.is_empty() || self.block_out_channels.len() > 8 {
            return input(format!(
                "VAE block_out_channels {:?}: 1 to 8 levels supported",
                self.block_out_channels
            ));
        }
        if g == 0 || self.block_out_channels.iter().any(|c| c % g != 0) {
            return input(format!(
                "VAE block_out_channels {:?} do not split into norm_num_groups {g}",
                self.block_out_channels
            ));
        }
        if self.layers_per_block == 0 || self.latent_channels == 0 {
            return input("VAE layers_per_block and latent_channels must be at least 1");
        }
        if !(self.scaling_factor.is_finite()
            && self.scaling_factor != 0.0
            && self.shift_factor.is_finite())
        {
            return input(format!(
                "VAE scaling_factor {} / shift_factor {} must be finite, the scale non-zero",
                self.scaling_factor, self.shift_factor
            ));
        }
        Ok(())
    }
}
