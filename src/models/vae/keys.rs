//! Weight names of the two VAE layouts: diffusers (`decoder.up_blocks.0.resnets.1.conv1`) and
//! the original LDM single file (`decoder.up.3.block.1.conv1`: up blocks counted from the
//! output side, `nin_shortcut`, attention `q`/`k`/`v`/`proj_out` as 1x1 convs), under a
//! prefix (`first_stage_model.` in SD3 checkpoints, none in FLUX's ae.safetensors).
//! Detected from the keys.

use crate::error::{Result, input};
use crate::weights::WeightSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Encoder,
    Decoder,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Encoder => "encoder",
            Side::Decoder => "decoder",
        }
    }
}

/// A ResNet block: resnet `j` of level `i` (levels counted as diffusers counts them: the
/// encoder's from the input, the decoder's from the latents), or mid-block resnet `i`.
#[derive(Clone, Copy, Debug)]
pub enum Block {
    Level(usize, usize),
    Mid(usize),
}

/// A part of the mid-block attention.
#[derive(Clone, Copy, Debug)]
pub enum AttnPart {
    Norm,
    Q,
    K,
    V,
    Out,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaeKeys {
    Diffusers {
        prefix: String,
    },
    /// `levels` maps the decoder's up blocks to LDM's reversed numbering.
    Ldm {
        prefix: String,
        levels: usize,
    },
}

impl VaeKeys {
    /// Find the VAE tensors: the key ending in `decoder.conv_in.weight` (or the encoder's)
    /// gives the prefix; `mid_block.` or `mid.block_1.` the layout. `levels` is filled in by
    /// [`VaeKeys::with_levels`] once counted.
    pub fn detect(w: &WeightSet) -> Result<VaeKeys> {
        let mut prefixes: Vec<String> = w
            .names()
            .filter_map(|n| {
                n.strip_suffix("decoder.conv_in.weight")
                    .or_else(|| n.strip_suffix("encoder.conv_in.weight"))
            })
            .map(str::to_string)
            .collect();
        prefixes.sort_by_key(|p| p.len());
        let Some(prefix) = prefixes.into_iter().next() else {
            return input(
                "the weights hold no VAE (no 'decoder.conv_in.weight' or 'encoder.conv_in.weight' tensor)",
            );
        };
        let has = |s: &str| w.names().any(|n| n.starts_with(&format!("{prefix}{s}")));
        if has("decoder.mid_block.") || has("encoder.mid_block.") {
            Ok(VaeKeys::Diffusers { prefix })
        } else if has("decoder.mid.") || has("encoder.mid.") {
            Ok(VaeKeys::Ldm { prefix, levels: 0 })
        } else {
            input(format!(
                "VAE tensors under '{prefix}' have neither diffusers (mid_block.) nor LDM (mid.block_1.) names"
            ))
        }
    }

    pub fn with_levels(self, n: usize) -> VaeKeys {
        match self {
            VaeKeys::Ldm { prefix, .. } => VaeKeys::Ldm { prefix, levels: n },
            d => d,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            VaeKeys::Diffusers { .. } => "diffusers",
            VaeKeys::Ldm { .. } => "single-file (LDM)",
        }
    }

    pub fn prefix(&self) -> &str {
        match self {
            VaeKeys::Diffusers { prefix } | VaeKeys::Ldm { prefix, .. } => prefix,
        }
    }

    fn ldm(&self) -> bool {
        matches!(self, VaeKeys::Ldm { .. })
    }

    pub fn conv_in(&self, s: Side) -> String {
        format!("{}{}.conv_in", self.prefix(), s.name())
    }

    pub fn conv_out(&self, s: Side) -> String {
        format!("{}{}.conv_out", self.prefix(), s.name())
    }

    pub fn norm_out(&self, s: Side) -> String {
        let n = if self.ldm() {
            "norm_out"
        } else {
            "conv_norm_out"
        };
        format!("{}{}.{n}", self.prefix(), s.name())
    }

    /// The quant conv (`post = false`, after the encoder) or post-quant conv (before the decoder).
    pub fn quant(&self, post: bool) -> String {
        let n = if post {
            "post_quant_conv"
        } else {
            "quant_conv"
        };
        format!("{}{n}", self.prefix())
    }

    /// Level i of a side in LDM numbering (the decoder's reversed).
    fn ldm_level(&self, s: Side, i: usize) -> usize {
        match (self, s) {
            (VaeKeys::Ldm { levels, .. }, Side::Decoder) => levels - 1 - i,
            _ => i,
        }
    }

    /// The ResNet block's base name; its parts are `norm1`, `conv1`, `norm2`, `conv2` and
    /// [`VaeKeys::shortcut`].
    pub fn resnet(&self, s: Side, b: Block) -> String {
        let (p, side) = (self.prefix(), s.name());
        match (self.ldm(), b, s) {
            (false, Block::Mid(i), _) => format!("{p}{side}.mid_block.resnets.{i}"),
            (true, Block::Mid(i), _) => format!("{p}{side}.mid.block_{}", i + 1),
            (false, Block::Level(i, j), Side::Encoder) => {
                format!("{p}encoder.down_blocks.{i}.resnets.{j}")
            }
            (false, Block::Level(i, j), Side::Decoder) => {
                format!("{p}decoder.up_blocks.{i}.resnets.{j}")
            }
            (true, Block::Level(i, j), Side::Encoder) => format!("{p}encoder.down.{i}.block.{j}"),
            (true, Block::Level(i, j), Side::Decoder) => {
                format!("{p}decoder.up.{}.block.{j}", self.ldm_level(s, i))
            }
        }
    }

    pub fn shortcut(&self) -> &'static str {
        if self.ldm() {
            "nin_shortcut"
        } else {
            "conv_shortcut"
        }
    }

    /// The down- (encoder) or upsampling (decoder) conv after level i.
    pub fn sampler(&self, s: Side, i: usize) -> String {
        let p = self.prefix();
        match (self.ldm(), s) {
            (false, Side::Encoder) => format!("{p}encoder.down_blocks.{i}.downsamplers.0.conv"),
            (false, Side::Decoder) => format!("{p}decoder.up_blocks.{i}.upsamplers.0.conv"),
            (true, Side::Encoder) => format!("{p}encoder.down.{i}.downsample.conv"),
            (true, Side::Decoder) => {
                format!("{p}decoder.up.{}.upsample.conv", self.ldm_level(s, i))
            }
        }
    }

    pub fn attn(&self, s: Side, part: AttnPart) -> String {
        let (p, side) = (self.prefix(), s.name());
        if self.ldm() {
            let n = match part {
                AttnPart::Norm => "norm",
                AttnPart::Q => "q",
                AttnPart::K => "k",
                AttnPart::V => "v",
                AttnPart::Out => "proj_out",
            };
            format!("{p}{side}.mid.attn_1.{n}")
        } else {
            let n = match part {
                AttnPart::Norm => "group_norm",
                AttnPart::Q => "to_q",
                AttnPart::K => "to_k",
                AttnPart::V => "to_v",
                AttnPart::Out => "to_out.0",
            };
            format!("{p}{side}.mid_block.attentions.0.{n}")
        }
    }
}
