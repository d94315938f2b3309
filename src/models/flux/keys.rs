//! Weight names of FLUX.1's two checkpoint formats: diffusers (`transformer_blocks.i` double
//! and `single_transformer_blocks.i` single-stream blocks, q/k/v separate) and Black Forest
//! Labs' original file (`double_blocks.i.img_attn.qkv`, `single_blocks.i.linear1`: fused),
//! without prefix or under `model.diffusion_model.`. Detected from the keys.

use crate::error::{Result, input};
use crate::models::joint::{Qkv, StreamNames};
use crate::weights::WeightSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FluxKeys {
    Diffusers { prefix: String },
    Original { prefix: String },
}

/// Whether these weights hold a FLUX transformer (rather than an SD3 MMDiT).
pub fn is_flux(w: &WeightSet) -> bool {
    w.names()
        .any(|n| n.contains("double_blocks.0.") || n.contains("single_transformer_blocks.0."))
}

/// The single-stream block's fused input projection, by format.
pub enum SingleInput {
    /// q, k, v and the MLP's projection as four tensors.
    Split { qkv: Qkv, mlp: String },
    /// One [3D + 4D, D] tensor (`linear1`).
    Fused(String),
}

impl FluxKeys {
    pub fn detect(w: &WeightSet) -> Result<FluxKeys> {
        for name in w.names() {
            if let Some(i) = name.find("double_blocks.0.") {
                return Ok(FluxKeys::Original {
                    prefix: name[..i].to_string(),
                });
            }
            if let Some(i) = name.find("single_transformer_blocks.0.") {
                return Ok(FluxKeys::Diffusers {
                    prefix: name[..i].to_string(),
                });
            }
        }
        input(
            "the weights hold no FLUX transformer (no 'double_blocks.0.' or 'single_transformer_blocks.0.' tensors)",
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            FluxKeys::Diffusers { .. } => "diffusers",
            FluxKeys::Original { .. } => "single-file",
        }
    }

    pub fn prefix(&self) -> &str {
        match self {
            FluxKeys::Diffusers { prefix } | FluxKeys::Original { prefix } => prefix,
        }
    }

    fn p(&self, diffusers: &str, original: &str) -> String {
        match self {
            FluxKeys::Diffusers { prefix } => format!("{prefix}{diffusers}"),
            FluxKeys::Original { prefix } => format!("{prefix}{original}"),
        }
    }

    pub fn img_in(&self) -> String {
        self.p("x_embedder", "img_in")
    }

    pub fn txt_in(&self) -> String {
        self.p("context_embedder", "txt_in")
    }

    /// Layer 1 or 2 of the MLP embedding `what`: "timestep", "guidance" or "text" (pooled).
    pub fn embedder(&self, what: &str, layer: usize) -> String {
        let original = match what {
            "timestep" => "time_in",
            "guidance" => "guidance_in",
            _ => "vector_in",
        };
        let l = if layer == 1 { "in_layer" } else { "out_layer" };
        self.p(
            &format!("time_text_embed.{what}_embedder.linear_{layer}"),
            &format!("{original}.{l}"),
        )
    }

    pub fn final_ada(&self) -> String {
        self.p("norm_out.linear", "final_layer.adaLN_modulation.1")
    }

    pub fn final_linear(&self) -> String {
        self.p("proj_out", "final_layer.linear")
    }

    /// Chunk indices of (shift, scale) of the final modulation: diffusers stores (scale, shift).
    pub fn shift_scale_pair(&self) -> (usize, usize) {
        match self {
            FluxKeys::Diffusers { .. } => (1, 0),
            FluxKeys::Original { .. } => (0, 1),
        }
    }

    /// What the names of double blocks start with, up to the index.
    pub fn double_prefix(&self) -> String {
        self.p("transformer_blocks.", "double_blocks.")
    }

    /// What the names of single blocks start with, up to the index.
    pub fn single_prefix(&self) -> String {
        self.p("single_transformer_blocks.", "single_blocks.")
    }

    /// The modulation linear of double block i's image (`text = false`) or text stream.
    pub fn double_ada(&self, i: usize, text: bool) -> String {
        let (d, o) = if text {
            ("norm1_context", "txt_mod")
        } else {
            ("norm1", "img_mod")
        };
        self.p(
            &format!("transformer_blocks.{i}.{d}.linear"),
            &format!("double_blocks.{i}.{o}.lin"),
        )
    }

    /// Every weight name of a stream of double block i.
    pub fn double_stream(&self, i: usize, text: bool) -> StreamNames {
        let ada = self.double_ada(i, text);
        match self {
            FluxKeys::Diffusers { prefix } => {
                let b = format!("{prefix}transformer_blocks.{i}");
                let (qkv, nq, nk, out, ff) = if text {
                    (
                        ["add_q_proj", "add_k_proj", "add_v_proj"],
                        "norm_added_q",
                        "norm_added_k",
                        "to_add_out",
                        "ff_context",
                    )
                } else {
                    (
                        ["to_q", "to_k", "to_v"],
                        "norm_q",
                        "norm_k",
                        "to_out.0",
                        "ff",
                    )
                };
                StreamNames {
                    ada,
                    chunks: 6,
                    qkv: Qkv::Split(qkv.map(|n| format!("{b}.attn.{n}"))),
                    norm_q: Some(format!("{b}.attn.{nq}.weight")),
                    norm_k: Some(format!("{b}.attn.{nk}.weight")),
                    out: Some([
                        format!("{b}.attn.{out}"),
                        format!("{b}.{ff}.net.0.proj"),
                        format!("{b}.{ff}.net.2"),
                    ]),
                }
            }
            FluxKeys::Original { prefix } => {
                let s = if text { "txt" } else { "img" };
                let b = format!("{prefix}double_blocks.{i}.{s}");
                StreamNames {
                    ada,
                    chunks: 6,
                    qkv: Qkv::Fused(format!("{b}_attn.qkv")),
                    norm_q: Some(format!("{b}_attn.norm.query_norm.scale")),
                    norm_k: Some(format!("{b}_attn.norm.key_norm.scale")),
                    out: Some([
                        format!("{b}_attn.proj"),
                        format!("{b}_mlp.0"),
                        format!("{b}_mlp.2"),
                    ]),
                }
            }
        }
    }

    pub fn single_ada(&self, i: usize) -> String {
        self.p(
            &format!("single_transformer_blocks.{i}.norm.linear"),
            &format!("single_blocks.{i}.modulation.lin"),
        )
    }

    pub fn single_input(&self, i: usize) -> SingleInput {
        match self {
            FluxKeys::Diffusers { prefix } => {
                let b = format!("{prefix}single_transformer_blocks.{i}");
                SingleInput::Split {
                    qkv: Qkv::Split(["to_q", "to_k", "to_v"].map(|n| format!("{b}.attn.{n}"))),
                    mlp: format!("{b}.proj_mlp"),
                }
            }
            FluxKeys::Original { prefix } => {
                SingleInput::Fused(format!("{prefix}single_blocks.{i}.linear1"))
            }
        }
    }

    /// The RMSNorm weight of q (`key = false`) or k of single block i.
    pub fn single_norm(&self, i: usize, key: bool) -> String {
        let (d, o) = if key {
            ("norm_k", "key_norm")
        } else {
            ("norm_q", "query_norm")
        };
        self.p(
            &format!("single_transformer_blocks.{i}.attn.{d}.weight"),
            &format!("single_blocks.{i}.norm.{o}.scale"),
        )
    }

    pub fn single_out(&self, i: usize) -> String {
        self.p(
            &format!("single_transformer_blocks.{i}.proj_out"),
            &format!("single_blocks.{i}.linear2"),
        )
    }
}
