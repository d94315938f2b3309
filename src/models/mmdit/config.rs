//! MMDiT hyper-parameters: read from config.json when present, else inferred from the shapes
//! of the weights (REFERENCE.md: depth from the block count, hidden from the patch embedding,
//! head dim from the qk-norm weights or 64, qk norm and dual attention from the keys present).

use serde::Serialize;

use crate::error::{Error, Result, input};
use crate::models::mmdit::keys::KeyFormat;
use crate::weights::WeightSet;

#[derive(Clone, Debug, Serialize)]
pub struct MmditConfig {
    pub depth: usize,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub patch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub joint_attention_dim: usize,
    pub pooled_dim: usize,
    pub pos_embed_max_size: usize,
    pub qk_norm: bool,
    pub dual_attention_layers: Vec<usize>,
    /// Native latent size (training resolution / 8).
    pub sample_size: usize,
    /// "config.json" or "inferred from weights".
    pub source: &'static str,
}

impl MmditConfig {
    /// The family name for reports and calibration tables.
    pub fn family(&self) -> &'static str {
        match (self.qk_norm, self.dual_attention_layers.is_empty()) {
            (true, false) => "sd3.5-medium",
            (true, true) => "sd3.5-large",
            _ => "sd3",
        }
    }

    pub fn from_json(json: &serde_json::Value) -> Result<MmditConfig> {
        let get = |k: &str, default: Option<usize>| -> Result<usize> {
            match json.get(k).and_then(|v| v.as_u64()) {
                Some(v) => Ok(v as usize),
                None => default
                    .ok_or_else(|| Error::Input(format!("transformer config.json lacks '{k}'"))),
            }
        };
        let heads = get("num_attention_heads", None)?;
        let head_dim = get("attention_head_dim", Some(64))?;
        let out_channels = match json.get("out_channels").and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => get("in_channels", Some(16))?,
        };
        let qk_norm = match json.get("qk_norm") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::String(s)) if s == "rms_norm" => true,
            Some(other) => {
                return input(format!(
                    "transformer config.json: unsupported qk_norm {other}"
                ));
            }
        };
        let dual_attention_layers = json
            .get("dual_attention_layers")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_default();
        let cfg = MmditConfig {
            depth: get("num_layers", None)?,
            hidden: heads * head_dim,
            heads,
            head_dim,
            patch: get("patch_size", Some(2))?,
            in_channels: get("in_channels", Some(16))?,
            out_channels,
            joint_attention_dim: get("joint_attention_dim", Some(4096))?,
            pooled_dim: get("pooled_projection_dim", Some(2048))?,
            pos_embed_max_size: get("pos_embed_max_size", Some(192))?,
            qk_norm,
            dual_attention_layers,
            sample_size: get("sample_size", Some(128))?,
            source: "config.json",
        };
        if let Some(c) = json.get("caption_projection_dim").and_then(|v| v.as_u64())
            && c as usize != cfg.hidden
        {
            return input(format!(
                "caption_projection_dim {c} differs from the hidden size {}: unsupported",
                cfg.hidden
            ));
        }
        Ok(cfg)
    }

    /// Infer the configuration from tensor names and shapes.
    pub fn infer(w: &WeightSet, keys: &KeyFormat) -> Result<MmditConfig> {
        let patch = w.get(&format!("{}.weight", keys.patch_embed()))?;
        let [hidden, in_channels, p, _] = *patch.shape else {
            return input(format!(
                "tensor '{}' should be a conv weight [D, C, p, p], got {:?}",
                patch.name, patch.shape
            ));
        };
        let depth = (0..)
            .take_while(|&i| w.contains(&format!("{}.weight", keys.ada(i, false))))
            .count();
        if depth == 0 {
            return input("no transformer blocks found in the weights");
        }
        let pos = w.get(&keys.pos_embed())?;
        let tokens = pos.shape.iter().rev().nth(1).copied().unwrap_or(0);
        let grid = (tokens as f64).sqrt().round() as usize;
        if grid * grid != tokens {
            return input(format!(
                "'{}' {:?} is not a square grid of positions",
                pos.name, pos.shape
            ));
        }
        let qk_name = keys.qk_norm(0, crate::models::mmdit::keys::Stream::Context, false);
        let (qk_norm, head_dim) = match w.get(&qk_name) {
            Ok(t) => (true, t.shape[0]),
            Err(_) => (false, 64),
        };
        let dual_attention_layers = (0..depth)
            .filter(|&i| w.contains(&keys.attn2_probe(i)))
            .collect();
        let final_linear = w.get(&format!("{}.weight", keys.final_linear()))?;
        let context = w.get(&format!("{}.weight", keys.context_embedder()))?;
        let pooled = w.get(&format!("{}.weight", keys.pooled_embedder(1)))?;
        if hidden % head_dim != 0 {
            return input(format!(
                "hidden size {hidden} is not a multiple of head dim {head_dim}"
            ));
        }
        Ok(MmditConfig {
            depth,
            hidden,
            heads: hidden / head_dim,
            head_dim,
            patch: p,
            in_channels,
            out_channels: final_linear.shape[0] / (p * p),
            joint_attention_dim: context.shape[1],
            pooled_dim: pooled.shape[1],
            pos_embed_max_size: grid,
            qk_norm,
            dual_attention_layers,
            sample_size: 128,
            source: "inferred from weights",
        })
    }

    /// The configuration and key format of a transformer's weights: a given config.json
    /// (a folder's own for diffusers-format weights, or `--config` for any), else inferred.
    pub fn resolve(
        w: &WeightSet,
        json: Option<&serde_json::Value>,
    ) -> Result<(MmditConfig, KeyFormat)> {
        let format = KeyFormat::detect(w)?;
        let config = match (json, &format) {
            (Some(json), _) => MmditConfig::from_json(json)?,
            (None, _) => MmditConfig::infer(w, &format)?,
        };
        Ok((config, format))
    }
}
