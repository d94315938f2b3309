//! Weight names of the two checkpoint formats: diffusers (`transformer_blocks.i.attn.to_q`, q/k/v
//! separate) and Stability's original single file (`joint_blocks.i.x_block.attn.qkv`, fused),
//! usually under the prefix `model.diffusion_model.`. Detected from the keys, not file names.

use crate::error::{Result, input};
use crate::models::joint::Qkv;
use crate::weights::WeightSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The image tokens (`x_block`).
    Image,
    /// The text tokens (`context_block`).
    Context,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    Diffusers { prefix: String },
    Original { prefix: String },
}

impl KeyFormat {
    /// Look at the keys: an original checkpoint has `joint_blocks.`, diffusers `transformer_blocks.`.
    pub fn detect(w: &WeightSet) -> Result<KeyFormat> {
        for name in w.names() {
            if let Some(i) = name.find("joint_blocks.0.") {
                return Ok(KeyFormat::Original {
                    prefix: name[..i].to_string(),
                });
            }
            if let Some(i) = name.find("transformer_blocks.0.") {
                return Ok(KeyFormat::Diffusers {
                    prefix: name[..i].to_string(),
                });
            }
        }
        input(
            "the weights hold no SD3 transformer (no 'joint_blocks.0.' or 'transformer_blocks.0.' tensors)",
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            KeyFormat::Diffusers { .. } => "diffusers",
            KeyFormat::Original { .. } => "single-file",
        }
    }

    fn p(&self, diffusers: &str, original: &str) -> String {
        match self {
            KeyFormat::Diffusers { prefix } => format!("{prefix}{diffusers}"),
            KeyFormat::Original { prefix } => format!("{prefix}{original}"),
        }
    }

    /// The prefix all transformer tensors share.
    pub fn prefix(&self) -> &str {
        match self {
            KeyFormat::Diffusers { prefix } | KeyFormat::Original { prefix } => prefix,
        }
    }

    pub fn pos_embed(&self) -> String {
        self.p("pos_embed.pos_embed", "pos_embed")
    }

    pub fn patch_embed(&self) -> String {
        self.p("pos_embed.proj", "x_embedder.proj")
    }

    /// Timestep MLP layer 1 or 2.
    pub fn time_embedder(&self, layer: usize) -> String {
        self.p(
            &format!("time_text_embed.timestep_embedder.linear_{layer}"),
            &format!("t_embedder.mlp.{}", 2 * (layer - 1)),
        )
    }

    /// Pooled-text MLP layer 1 or 2.
    pub fn pooled_embedder(&self, layer: usize) -> String {
        self.p(
            &format!("time_text_embed.text_embedder.linear_{layer}"),
            &format!("y_embedder.mlp.{}", 2 * (layer - 1)),
        )
    }

    pub fn context_embedder(&self) -> String {
        self.p("context_embedder", "context_embedder")
    }

    pub fn final_ada(&self) -> String {
        self.p("norm_out.linear", "final_layer.adaLN_modulation.1")
    }

    pub fn final_linear(&self) -> String {
        self.p("proj_out", "final_layer.linear")
    }

    /// Chunk indices of (shift, scale) in a two-chunk modulation: diffusers stores the final
    /// layer's and the last context block's halves as (scale, shift), the original as (shift, scale).
    pub fn shift_scale_pair(&self) -> (usize, usize) {
        match self {
            KeyFormat::Diffusers { .. } => (1, 0),
            KeyFormat::Original { .. } => (0, 1),
        }
    }

    /// The original format's name of a stream of block i.
    fn block(&self, i: usize, s: Stream) -> String {
        match s {
            Stream::Image => format!("joint_blocks.{i}.x_block"),
            Stream::Context => format!("joint_blocks.{i}.context_block"),
        }
    }

    pub fn ada(&self, i: usize, context: bool) -> String {
        let s = if context {
            Stream::Context
        } else {
            Stream::Image
        };
        let o = self.block(i, s);
        let d = if context {
            "norm1_context.linear"
        } else {
            "norm1.linear"
        };
        self.p(
            &format!("transformer_blocks.{i}.{d}"),
            &format!("{o}.adaLN_modulation.1"),
        )
    }

    pub fn qkv(&self, i: usize, s: Stream) -> Qkv {
        let o = self.block(i, s);
        match self {
            KeyFormat::Original { prefix } => Qkv::Fused(format!("{prefix}{o}.attn.qkv")),
            KeyFormat::Diffusers { prefix } => {
                let names = match s {
                    Stream::Image => ["to_q", "to_k", "to_v"],
                    Stream::Context => ["add_q_proj", "add_k_proj", "add_v_proj"],
                };
                Qkv::Split(names.map(|n| format!("{prefix}transformer_blocks.{i}.attn.{n}")))
            }
        }
    }

    pub fn proj(&self, i: usize, s: Stream) -> String {
        let o = self.block(i, s);
        let d = match s {
            Stream::Image => "attn.to_out.0",
            Stream::Context => "attn.to_add_out",
        };
        self.p(
            &format!("transformer_blocks.{i}.{d}"),
            &format!("{o}.attn.proj"),
        )
    }

    /// The RMSNorm weight of q (`key = false`) or k of a stream's joint attention.
    pub fn qk_norm(&self, i: usize, s: Stream, key: bool) -> String {
        let o = self.block(i, s);
        let d = match (s, key) {
            (Stream::Image, false) => "norm_q",
            (Stream::Image, true) => "norm_k",
            (Stream::Context, false) => "norm_added_q",
            (Stream::Context, true) => "norm_added_k",
        };
        let orig = if key { "ln_k" } else { "ln_q" };
        self.p(
            &format!("transformer_blocks.{i}.attn.{d}.weight"),
            &format!("{o}.attn.{orig}.weight"),
        )
    }

    /// Feed-forward layer 1 (`fc1`) or 2 of a stream.
    pub fn mlp(&self, i: usize, s: Stream, layer: usize) -> String {
        let o = self.block(i, s);
        let ff = match s {
            Stream::Image => "ff",
            Stream::Context => "ff_context",
        };
        let d = if layer == 1 { "net.0.proj" } else { "net.2" };
        self.p(
            &format!("transformer_blocks.{i}.{ff}.{d}"),
            &format!("{o}.mlp.fc{layer}"),
        )
    }

    /// MMDiT-X second attention (image tokens only).
    pub fn attn2_qkv(&self, i: usize) -> Qkv {
        match self {
            KeyFormat::Original { prefix } => {
                Qkv::Fused(format!("{prefix}joint_blocks.{i}.x_block.attn2.qkv"))
            }
            KeyFormat::Diffusers { prefix } => Qkv::Split(
                ["to_q", "to_k", "to_v"]
                    .map(|n| format!("{prefix}transformer_blocks.{i}.attn2.{n}")),
            ),
        }
    }

    pub fn attn2_proj(&self, i: usize) -> String {
        self.p(
            &format!("transformer_blocks.{i}.attn2.to_out.0"),
            &format!("joint_blocks.{i}.x_block.attn2.proj"),
        )
    }

    pub fn attn2_norm(&self, i: usize, key: bool) -> String {
        let (d, o) = if key {
            ("norm_k", "ln_k")
        } else {
            ("norm_q", "ln_q")
        };
        self.p(
            &format!("transformer_blocks.{i}.attn2.{d}.weight"),
            &format!("joint_blocks.{i}.x_block.attn2.{o}.weight"),
        )
    }

    /// A tensor whose presence marks block i as an MMDiT-X dual-attention block.
    pub fn attn2_probe(&self, i: usize) -> String {
        format!("{}.weight", self.attn2_proj(i))
    }
}
