//! CLIP text-encoder hyper-parameters: from a transformers config.json, checked against the
//! tensors, or inferred from them for single files (head dim 64, the activation by which
//! encoder it is).

use noiseshift_kernels::ops::Act;
use serde_json::Value;

use crate::error::{Error, Result, input};
use crate::weights::WeightSet;

/// Where the pooled output is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolRule {
    /// The first position of the largest id (configs with the legacy eos_token_id 2, whose end
    /// token is the vocabulary's largest id; transformers keeps this rule for them).
    ArgmaxId,
    /// The first position of this end token.
    FirstEos(u32),
}

impl PoolRule {
    pub fn position(self, ids: &[u32]) -> usize {
        match self {
            PoolRule::ArgmaxId => {
                let max = ids.iter().copied().max().unwrap_or(0);
                ids.iter().position(|&i| i == max).unwrap_or(0)
            }
            // A sequence without its end token pools at 0, as transformers' argmax of an
            // all-false mask does.
            PoolRule::FirstEos(eos) => ids.iter().position(|&i| i == eos).unwrap_or(0),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClipConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub positions: usize,
    pub act: Act,
    pub eps: f32,
    /// Width of text_projection, when the encoder has one.
    pub projection: Option<usize>,
    pub pool: PoolRule,
}

fn act_of(name: &str) -> Result<Act> {
    match name {
        "quick_gelu" => Ok(Act::QuickGelu),
        "gelu" => Ok(Act::GeluErf),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(Act::GeluTanh),
        other => input(format!("CLIP hidden_act '{other}' is not supported")),
    }
}

/// Shapes read off the tensors under `prefix`.
struct Shapes {
    vocab: usize,
    hidden: usize,
    positions: usize,
    layers: usize,
    intermediate: usize,
    projection: Option<usize>,
}

fn shapes(w: &WeightSet, prefix: &str) -> Result<Shapes> {
    let matrix = |name: &str| -> Result<[usize; 2]> {
        let t = w.get(&format!("{prefix}{name}"))?;
        match *t.shape {
            [a, b] if a > 0 && b > 0 => Ok([a, b]),
            _ => input(format!(
                "tensor '{}' in {} has shape {:?}, expected a non-empty matrix",
                t.name,
                t.path.display(),
                t.shape
            )),
        }
    };
    let [vocab, hidden] = matrix("text_model.embeddings.token_embedding.weight")?;
    let [positions, _] = matrix("text_model.embeddings.position_embedding.weight")?;
    let layers = (0..)
        .take_while(|i| {
            w.contains(&format!(
                "{prefix}text_model.encoder.layers.{i}.self_attn.q_proj.weight"
            ))
        })
        .count();
    if layers < 2 {
        return input(format!(
            "CLIP encoder '{prefix}' has {layers} layers under text_model.encoder.layers; at least 2 are needed \
             (the sequence output is the penultimate layer's)"
        ));
    }
    let [intermediate, _] = matrix("text_model.encoder.layers.0.mlp.fc1.weight")?;
    let projection = if w.contains(&format!("{prefix}text_projection.weight")) {
        Some(matrix("text_projection.weight")?[0])
    } else {
        None
    };
    Ok(Shapes {
        vocab,
        hidden,
        positions,
        layers,
        intermediate,
        projection,
    })
}

impl ClipConfig {
    /// From config.json (checked against the tensors) or, without one, inferred with `act` and
    /// the end token `eos` of the tokenizer.
    pub fn resolve(
        w: &WeightSet,
        prefix: &str,
        json: Option<&Value>,
        act: Act,
        eos: u32,
    ) -> Result<ClipConfig> {
        let s = shapes(w, prefix)?;
        let Some(json) = json else {
            return ClipConfig {
                vocab: s.vocab,
                hidden: s.hidden,
                layers: s.layers,
                heads: (s.hidden / 64).max(1),
                intermediate: s.intermediate,
                positions: s.positions,
                act,
                eps: 1e-5,
                projection: s.projection,
                pool: PoolRule::FirstEos(eos),
            }
            .checked();
        };
        let get = |k: &str| -> Result<usize> {
            json.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| Error::Input(format!("text encoder config.json lacks '{k}'")))
        };
        let agree = |k: &str, found: usize| -> Result<usize> {
            let v = get(k)?;
            if v != found {
                return input(format!(
                    "text encoder config.json says {k} = {v} but the weights have {found}"
                ));
            }
            Ok(v)
        };
        let act = match json.get("hidden_act").and_then(Value::as_str) {
            Some(name) => act_of(name)?,
            None => Act::QuickGelu,
        };
        let pool = match json.get("eos_token_id").and_then(Value::as_u64) {
            Some(2) | None => PoolRule::ArgmaxId,
            Some(id) => PoolRule::FirstEos(id as u32),
        };
        ClipConfig {
            vocab: agree("vocab_size", s.vocab)?,
            hidden: agree("hidden_size", s.hidden)?,
            layers: agree("num_hidden_layers", s.layers)?,
            heads: get("num_attention_heads")?,
            intermediate: agree("intermediate_size", s.intermediate)?,
            positions: agree("max_position_embeddings", s.positions)?,
            act,
            eps: json
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5) as f32,
            projection: s.projection,
            pool,
        }
        .checked()
    }

    fn checked(self) -> Result<ClipConfig> {
        let hd = self.hidden / self.heads.max(1);
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) || !hd.is_multiple_of(4) {
            return input(format!(
                "CLIP width {} does not split into {} heads of a multiple of 4",
                self.hidden, self.heads
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return input(format!("CLIP layer_norm_eps {} must be positive", self.eps));
        }
        Ok(self)
    }
}
