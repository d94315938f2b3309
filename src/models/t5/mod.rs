//! The T5 v1.1 encoder (T5-XXL for SD3 and FLUX), as op calls: RMSNorm (no mean, no bias),
//! self-attention without 1/sqrt(d) scaling plus a relative position bias computed once from
//! block 0's bucket table and added in every block, gated-GELU (tanh) feed-forward, final
//! RMSNorm. Activations stay f32 throughout: T5's residual stream exceeds the f16 range.

use noiseshift_kernels::ops::attention::{AttentionVariant, KvSource, QuerySource, ScoreMods};
use noiseshift_kernels::ops::norm::{Heads, rms_norm_heads};
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Tensor};
use serde_json::Value;

use crate::error::{Error, Result, input};
use crate::models::embedding;
use crate::models::linear::{Linear, load_vector};
use crate::models::stream::Layers;
use crate::weights::WeightSet;

#[derive(Clone, Debug)]
pub struct T5Config {
    pub vocab: usize,
    pub d_model: usize,
    pub heads: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub layers: usize,
    pub buckets: usize,
    pub max_distance: usize,
    pub eps: f32,
}

struct Block {
    ln_attn: Tensor,
    qkv: Linear,
    out: Linear,
    ln_ff: Tensor,
    /// wi_0 (through GELU, fused into its matmul) gates wi_1.
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

pub struct T5Encoder<'w> {
    pub config: T5Config,
    weights: &'w WeightSet,
    prefix: String,
    embed_name: String,
    /// Block 0's bucket table [buckets, heads], widened on the host.
    bucket_bias: Vec<f32>,
    blocks: Layers<Block>,
    final_norm: Tensor,
}

fn block_name(prefix: &str, i: usize, s: &str) -> String {
    format!("{prefix}encoder.block.{i}.{s}")
}

const BIAS_TABLE: &str = "layer.0.SelfAttention.relative_attention_bias.weight";

impl T5Config {
    /// From config.json (checked against the tensors), else inferred from them.
    pub fn resolve(w: &WeightSet, prefix: &str, json: Option<&Value>) -> Result<T5Config> {
        let embed = embed_name(w, prefix)?;
        let table = w.get(&embed)?;
        let [vocab, d_model] = *table.shape else {
            return input(format!(
                "tensor '{embed}' has shape {:?}, expected [vocab, d_model]",
                table.shape
            ));
        };
        let layers = (0..)
            .take_while(|&i| w.contains(&block_name(prefix, i, "layer.0.SelfAttention.q.weight")))
            .count();
        let bias = w.get(&block_name(prefix, 0, BIAS_TABLE))?;
        let [buckets, heads] = *bias.shape else {
            return input(format!(
                "tensor '{}' has shape {:?}, expected [buckets, heads]",
                bias.name, bias.shape
            ));
        };
        let q = w.get(&block_name(prefix, 0, "layer.0.SelfAttention.q.weight"))?;
        let ff = w.get(&block_name(prefix, 0, "layer.1.DenseReluDense.wi_0.weight"))?;
        let (inner, d_ff) = (q.shape.first().copied(), ff.shape.first().copied());
        let (Some(inner), Some(d_ff)) = (inner, d_ff) else {
            return input(format!("T5 encoder '{prefix}': malformed block 0 weights"));
        };
        let mut c = T5Config {
            vocab,
            d_model,
            heads,
            d_kv: inner.checked_div(heads).unwrap_or(0),
            d_ff,
            layers,
            buckets,
            max_distance: 128,
            eps: 1e-6,
        };
        if let Some(json) = json {
            let get = |k: &str| json.get(k).and_then(Value::as_u64).map(|v| v as usize);
            for (k, found) in [
                ("vocab_size", c.vocab),
                ("d_model", c.d_model),
                ("num_heads", c.heads),
                ("d_kv", c.d_kv),
                ("d_ff", c.d_ff),
                ("num_layers", c.layers),
                ("relative_attention_num_buckets", c.buckets),
            ] {
                if let Some(v) = get(k)
                    && v != found
                {
                    return input(format!(
                        "T5 config.json says {k} = {v} but the weights have {found}"
                    ));
                }
            }
            if let Some(v) = get("relative_attention_max_distance") {
                c.max_distance = v;
            }
            if let Some(v) = json.get("layer_norm_epsilon").and_then(Value::as_f64) {
                c.eps = v as f32;
            }
            let ff = json.get("feed_forward_proj").and_then(Value::as_str);
            if !matches!(ff, None | Some("gated-gelu")) {
                return input(format!(
                    "T5 feed_forward_proj {ff:?} is not supported (T5 v1.1 encoders are gated-gelu)"
                ));
            }
        }
        if c.layers == 0 || c.heads == 0 || c.d_kv == 0 || c.d_kv * c.heads != inner {
            return input(format!(
                "T5 encoder '{prefix}': {} blocks, {} heads of {} do not fit q [{inner}, {d_model}]",
                c.layers, c.heads, c.d_kv
            ));
        }
        if c.buckets < 4 || c.max_distance < c.buckets / 4 || !(c.eps.is_finite() && c.eps > 0.0) {
            return input(format!(
                "T5 encoder '{prefix}': {} buckets, max distance {}, eps {}",
                c.buckets, c.max_distance, c.eps
            ));
        }
        Ok(c)
    }
}

/// The token table: `shared.weight`, or `encoder.embed_tokens.weight` where only that is stored.
fn embed_name(w: &WeightSet, prefix: &str) -> Result<String> {
    ["shared.weight", "encoder.embed_tokens.weight"]
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .find(|n| w.contains(n))
        .ok_or_else(|| {
            Error::Input(format!(
                "T5 encoder: no token table '{prefix}shared.weight' or '{prefix}encoder.embed_tokens.weight'"
            ))
        })
}

/// transformers' bidirectional relative-position bucket of `relative` = key - query, with the
/// logarithmic part in f32 as there.
pub fn bucket(relative: i64, buckets: usize, max_distance: usize) -> usize {
    let half = buckets / 2;
    let mut out = if relative > 0 { half } else { 0 };
    let n = relative.unsigned_abs() as usize;
    let exact = half / 2;
    out += if n < exact {
        n
    } else {
        let scaled = (n as f32 / exact as f32).ln()
            / (max_distance as f64 / exact as f64).ln() as f32
            * (half - exact) as f32;
        (exact + scaled as usize).min(half - 1)
    };
    out
}

impl<'w> T5Encoder<'w> {
    pub fn load(
        gpu: &Gpu,
        w: &'w WeightSet,
        prefix: &str,
        config: T5Config,
        stream: bool,
    ) -> Result<T5Encoder<'w>> {
        let table = w.get_shaped(
            &block_name(prefix, 0, BIAS_TABLE),
            &[config.buckets, config.heads],
        )?;
        let mut model = T5Encoder {
            embed_name: embed_name(w, prefix)?,
            bucket_bias: table.dtype.to_f32(table.bytes),
            final_norm: load_vector(
                gpu,
                w,
                &format!("{prefix}encoder.final_layer_norm.weight"),
                config.d_model,
            )?,
            blocks: Layers::Streamed(0),
            weights: w,
            prefix: prefix.to_string(),
            config,
        };
        model.blocks = Layers::load(model.config.layers, stream, |i| model.load_block(gpu, i))?;
        gpu.finish()?;
        Ok(model)
    }

    fn load_block(&self, gpu: &Gpu, i: usize) -> Result<Block> {
        let (w, c) = (self.weights, &self.config);
        let (d, inner) = (c.d_model, c.heads * c.d_kv);
        let n = |s: &str| block_name(&self.prefix, i, s);
        let a = |s: &str| n(&format!("layer.0.SelfAttention.{s}"));
        let f = |s: &str| n(&format!("layer.1.DenseReluDense.{s}"));
        Ok(Block {
            ln_attn: load_vector(gpu, w, &n("layer.0.layer_norm.weight"), d)?,
            qkv: Linear::load_fused(
                gpu,
                w,
                &[&a("q"), &a("k"), &a("v")],
                &[inner, inner, inner],
                d,
            )?,
            out: Linear::load(gpu, w, &a("o"), d, inner)?,
            ln_ff: load_vector(gpu, w, &n("layer.1.layer_norm.weight"), d)?,
            wi_0: Linear::load(gpu, w, &f("wi_0"), c.d_ff, d)?,
            wi_1: Linear::load(gpu, w, &f("wi_1"), c.d_ff, d)?,
            wo: Linear::load(gpu, w, &f("wo"), d, c.d_ff)?,
        })
    }

    /// The position bias [heads, L, L] of a sequence of `len` tokens.
    fn position_bias(&self, gpu: &Gpu, len: usize) -> Result<Tensor> {
        let c = &self.config;
        let mut bias = vec![0.0f32; c.heads * len * len];
        for i in 0..len {
            for j in 0..len {
                let b = bucket(j as i64 - i as i64, c.buckets, c.max_distance);
                for h in 0..c.heads {
                    bias[(h * len + i) * len + j] = self.bucket_bias[b * c.heads + h];
                }
            }
        }
        Ok(Tensor::from_f32(gpu, &[c.heads, len, len], &bias)?)
    }

    /// RMSNorm of x's rows with `weight`, into a new tensor.
    fn norm(&self, gpu: &Gpu, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let n = x.duplicate(gpu)?;
        let heads = Heads {
            col_off: 0,
            heads: 1,
            d: self.config.d_model,
        };
        rms_norm_heads(gpu, &n, heads, weight, self.config.eps)?;
        Ok(n)
    }

    /// The final hidden states [B, L, d_model] of token ids [B][L] (no attention mask: padding
    /// is attended, as diffusers runs T5). `on_block(i)` after each block.
    pub fn forward(
        &self,
        gpu: &Gpu,
        ids: &[Vec<u32>],
        mut on_block: impl FnMut(usize) -> Result<()>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, l) = (ids.len(), ids.first().map_or(0, Vec::len));
        if b == 0 || l == 0 || ids.iter().any(|r| r.len() != l) {
            return input(
                "T5 takes at least one token per prompt, equal for every prompt of a batch",
            );
        }
        let bias = self.position_bias(gpu, l)?;
        let mut x = embedding::lookup(gpu, self.weights, &self.embed_name, ids)?;
        let load = |i| self.load_block(gpu, i);
        for i in 0..self.blocks.len() {
            x = self
                .blocks
                .with(i, load, |block| self.block(gpu, block, &x, &bias, b, l))?;
            on_block(i)?;
        }
        self.norm(gpu, &x, &self.final_norm)?
            .reshape(&[b, l, c.d_model])
            .map_err(Into::into)
    }

    fn block(
        &self,
        gpu: &Gpu,
        block: &Block,
        x: &Tensor,
        bias: &Tensor,
        b: usize,
        l: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let inner = c.heads * c.d_kv;
        let qkv = block
            .qkv
            .forward(gpu, &self.norm(gpu, x, &block.ln_attn)?, Act::None)?;
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
                k_off: inner,
                v_off: 2 * inner,
            }],
            b,
            c.heads,
            c.d_kv,
            1.0,
            ScoreMods {
                causal: false,
                bias: Some(bias),
            },
            AttentionVariant::Auto,
        )?
        .reshape(&[b * l, inner])?;
        let x = ops::elementwise::add(gpu, x, &block.out.forward(gpu, &attn, Act::None)?)?;
        let n = self.norm(gpu, &x, &block.ln_ff)?;
        let gated = ops::elementwise::mul(
            gpu,
            &block.wi_0.forward(gpu, &n, Act::GeluTanh)?,
            &block.wi_1.forward(gpu, &n, Act::None)?,
        )?;
        Ok(ops::elementwise::add(
            gpu,
            &x,
            &block.wo.forward(gpu, &gated, Act::None)?,
        )?)
    }
}
