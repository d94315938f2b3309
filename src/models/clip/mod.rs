//! The CLIP text transformer (CLIP-L/14, OpenCLIP bigG/14), as op calls: token and learned
//! position embeddings, pre-LayerNorm blocks with causal self-attention and a quick-GELU or
//! GELU MLP. Outputs as diffusers uses them: the sequence is the hidden state entering the last
//! block (transformers' `hidden_states[-2]`), pooled is the final LayerNorm at the end token's
//! position, then `text_projection` when stored.

pub mod config;

use noiseshift_kernels::ops::attention::{AttentionVariant, KvSource, QuerySource, ScoreMods};
use noiseshift_kernels::ops::norm::layer_norm;
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Tensor};

pub use config::{ClipConfig, PoolRule};

use crate::error::{Result, input};
use crate::models::embedding;
use crate::models::linear::{Linear, load_vector};
use crate::models::stream::Layers;
use crate::weights::WeightSet;

struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(gpu: &Gpu, w: &WeightSet, name: &str, d: usize) -> Result<Norm> {
        Ok(Norm {
            weight: load_vector(gpu, w, &format!("{name}.weight"), d)?,
            bias: load_vector(gpu, w, &format!("{name}.bias"), d)?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(layer_norm(
            gpu,
            x,
            Some(&self.weight),
            Some(&self.bias),
            None,
            eps,
        )?)
    }
}

struct Layer {
    ln1: Norm,
    qkv: Linear,
    out: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

pub struct ClipText<'w> {
    pub config: ClipConfig,
    weights: &'w WeightSet,
    /// Tensor-name prefix: "" in a diffusers folder, `text_encoders.clip_l.transformer.` in a
    /// single file.
    prefix: String,
    positions: Tensor,
    layers: Layers<Layer>,
    final_norm: Norm,
    projection: Option<Linear>,
}

/// Sequence [B, L, D] and pooled [B, P] outputs.
pub struct ClipOutput {
    pub sequence: Tensor,
    pub pooled: Tensor,
}

impl<'w> ClipText<'w> {
    /// Upload the encoder (its layers only when `stream` is false).
    pub fn load(
        gpu: &Gpu,
        w: &'w WeightSet,
        prefix: &str,
        config: ClipConfig,
        stream: bool,
    ) -> Result<ClipText<'w>> {
        let d = config.hidden;
        let name = |n: &str| format!("{prefix}text_model.{n}");
        let positions = w
            .get_shaped(
                &name("embeddings.position_embedding.weight"),
                &[config.positions, d],
            )?
            .upload(gpu)?;
        let positions = ops::elementwise::to_f32(gpu, &positions)?;
        let mut model = ClipText {
            final_norm: Norm::load(gpu, w, &name("final_layer_norm"), d)?,
            projection: match config.projection {
                Some(p) => Some(Linear::load(
                    gpu,
                    w,
                    &format!("{prefix}text_projection"),
                    p,
                    d,
                )?),
                None => None,
            },
            layers: Layers::Streamed(0),
            positions,
            weights: w,
            prefix: prefix.to_string(),
            config,
        };
        model.layers = Layers::load(model.config.layers, stream, |i| model.load_layer(gpu, i))?;
        gpu.finish()?;
        Ok(model)
    }

    fn load_layer(&self, gpu: &Gpu, i: usize) -> Result<Layer> {
        let (w, c) = (self.weights, &self.config);
        let d = c.hidden;
        let n = |s: &str| format!("{}text_model.encoder.layers.{i}.{s}", self.prefix);
        let (q, k, v) = (
            n("self_attn.q_proj"),
            n("self_attn.k_proj"),
            n("self_attn.v_proj"),
        );
        Ok(Layer {
            ln1: Norm::load(gpu, w, &n("layer_norm1"), d)?,
            qkv: Linear::load_fused(gpu, w, &[&q, &k, &v], &[d, d, d], d)?,
            out: Linear::load(gpu, w, &n("self_attn.out_proj"), d, d)?,
            ln2: Norm::load(gpu, w, &n("layer_norm2"), d)?,
            fc1: Linear::load(gpu, w, &n("mlp.fc1"), c.intermediate, d)?,
            fc2: Linear::load(gpu, w, &n("mlp.fc2"), d, c.intermediate)?,
        })
    }

    /// Encode token ids [B][L] (L <= the position table). `on_layer(i)` after each block.
    pub fn forward(
        &self,
        gpu: &Gpu,
        ids: &[Vec<u32>],
        mut on_layer: impl FnMut(usize) -> Result<()>,
    ) -> Result<ClipOutput> {
        let c = &self.config;
        let (b, l, d) = (ids.len(), ids.first().map_or(0, Vec::len), c.hidden);
        if b == 0 || l == 0 || l > c.positions || ids.iter().any(|r| r.len() != l) {
            return input(format!(
                "CLIP takes 1 to {} tokens per prompt, equal for every prompt of a batch",
                c.positions
            ));
        }
        let tokens = embedding::lookup(
            gpu,
            self.weights,
            &format!(
                "{}text_model.embeddings.token_embedding.weight",
                self.prefix
            ),
            ids,
        )?
        .reshape(&[b, l, d])?;
        let positions = if l == c.positions {
            self.positions.clone()
        } else {
            ops::layout::split_tokens(gpu, &self.positions.reshape(&[1, c.positions, d])?, l)?.0
        };
        let mut x = ops::elementwise::add(gpu, &tokens, &positions.reshape(&[l, d])?)?;
        let mut penultimate = None;
        let load = |i| self.load_layer(gpu, i);
        for i in 0..self.layers.len() {
            if i + 1 == self.layers.len() {
                penultimate = Some(x.clone());
            }
            x = self
                .layers
                .with(i, load, |layer| self.layer(gpu, layer, &x, b, l))?;
            on_layer(i)?;
        }
        let sequence = penultimate.expect("config validation: at least one layer");
        // Pool first, then normalise: the final LayerNorm is per row.
        let rows: Vec<usize> = ids
            .iter()
            .enumerate()
            .map(|(r, row)| r * l + c.pool.position(row))
            .collect();
        let picked = ops::layout::gather_batch(gpu, &x.reshape(&[b * l, d])?, &rows)?;
        let pooled = self.final_norm.forward(gpu, &picked, c.eps)?;
        let pooled = match &self.projection {
            Some(p) => p.forward(gpu, &pooled, Act::None)?,
            None => pooled,
        };
        Ok(ClipOutput { sequence, pooled })
    }

    /// x + attn(LN1(x)), then + MLP(LN2(.)).
    fn layer(&self, gpu: &Gpu, layer: &Layer, x: &Tensor, b: usize, l: usize) -> Result<Tensor> {
        let c = &self.config;
        let d = c.hidden;
        let qkv = layer
            .qkv
            .forward(gpu, &layer.ln1.forward(gpu, x, c.eps)?, Act::None)?
            .reshape(&[b * l, 3 * d])?;
        let attn = ops::attention::attention_mods(
            gpu,
            QuerySource {
                tensor: &qkv,
                len: l,
                off: 0,
            },
            &[KvSource {
                tensor: &qkv,
                len: l,
                k_off: d,
                v_off: 2 * d,
            }],
            b,
            c.heads,
            d / c.heads,
            1.0 / ((d / c.heads) as f32).sqrt(),
            ScoreMods {
                causal: true,
                bias: None,
            },
            AttentionVariant::Auto,
        )?;
        let x = ops::elementwise::add(gpu, x, &layer.out.forward(gpu, &attn, Act::None)?)?;
        let h = layer
            .fc1
            .forward(gpu, &layer.ln2.forward(gpu, &x, c.eps)?, c.act)?;
        Ok(ops::elementwise::add(
            gpu,
            &x,
            &layer.fc2.forward(gpu, &h, Act::None)?,
        )?)
    }
}
