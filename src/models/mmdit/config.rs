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

    /// The configuration of a config.json, every value type- and range-checked; `inferred` (from
    /// the tensors) must agree with it on everything the shapes tell.
    pub fn from_json(json: &serde_json::Value, inferred: &MmditConfig) -> Result<MmditConfig> {
        let get = |k: &str, default: Option<usize>| -> Result<usize> {
            match json.get(k) {
                None | Some(serde_json::Value::Null) => default
                    .ok_or_else(|| Error::Input(format!("transformer config.json lacks '{k}'"))),
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 1 && n <= MAX_DIM as u64 => Ok(n as usize),
                    _ => input(format!(
                        "transformer config.json: {k} must be an integer from 1 to {MAX_DIM}, got {v}"
                    )),
                },
            }
        };
        let heads = get("num_attention_heads", None)?;
        let head_dim = get("attention_head_dim", Some(64))?;
        let in_channels = get("in_channels", Some(16))?;
        let qk_norm = match json.get("qk_norm") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::String(s)) if s == "rms_norm" => true,
            Some(other) => {
                return input(format!(
                    "transformer config.json: unsupported qk_norm {other}"
                ));
            }
        };
        let dual_attention_layers = match json.get("dual_attention_layers") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64().map(|x| x as usize).ok_or_else(|| {
                        Error::Input(format!(
                            "transformer config.json: dual_attention_layers holds {v}, not a layer index"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => {
                return input(format!(
                    "transformer config.json: dual_attention_layers must be a list, got {other}"
                ));
            }
        };
        let cfg = MmditConfig {
            depth: get("num_layers", None)?,
            hidden: heads * head_dim,
            heads,
            head_dim,
            patch: get("patch_size", Some(2))?,
            in_channels,
            out_channels: get("out_channels", Some(in_channels))?,
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
        let i = inferred;
        let agree: [(&str, usize, usize); 8] = [
            ("num_layers", cfg.depth, i.depth),
            (
                "num_attention_heads x attention_head_dim",
                cfg.hidden,
                i.hidden,
            ),
            ("patch_size", cfg.patch, i.patch),
            ("in_channels", cfg.in_channels, i.in_channels),
            ("out_channels", cfg.out_channels, i.out_channels),
            (
                "joint_attention_dim",
                cfg.joint_attention_dim,
                i.joint_attention_dim,
            ),
            ("pooled_projection_dim", cfg.pooled_dim, i.pooled_dim),
            (
                "pos_embed_max_size",
                cfg.pos_embed_max_size,
                i.pos_embed_max_size,
            ),
        ];
        for (k, said, found) in agree {
            if said != found {
                return input(format!(
                    "transformer config.json says {k} = {said}, but the weights have {found}"
                ));
            }
        }
        if cfg.qk_norm != i.qk_norm {
            return input(format!(
                "transformer config.json says qk_norm {}, but the weights {} qk-norm tensors",
                if cfg.qk_norm { "rms_norm" } else { "none" },
                if i.qk_norm { "have" } else { "lack" }
            ));
        }
        if i.qk_norm && cfg.head_dim != i.head_dim {
            return input(format!(
                "transformer config.json says attention_head_dim = {}, but the qk-norm weights have {}",
                cfg.head_dim, i.head_dim
            ));
        }
        if cfg.dual_attention_layers != i.dual_attention_layers {
            return input(format!(
                "transformer config.json says dual_attention_layers {:?}, but the weights have attn2 in {:?}",
                cfg.dual_attention_layers, i.dual_attention_layers
            ));
        }
        cfg.checked()
    }

    /// Infer the configuration from tensor names and shapes, every rank and dim checked before
    /// it is used.
    pub fn infer(w: &WeightSet, keys: &KeyFormat) -> Result<MmditConfig> {
        let shape = |name: &str, rank: usize| w.shape_checked(name, rank, MAX_DIM);
        let patch_name = format!("{}.weight", keys.patch_embed());
        let [hidden, in_channels, p, p2] = shape(&patch_name, 4)?[..] else {
            unreachable!("rank checked")
        };
        if p != p2 {
            return input(format!(
                "tensor '{patch_name}' is a {p}x{p2} conv; the patch embedding must be square"
            ));
        }
        let depth = (0..MAX_DEPTH + 1)
            .take_while(|&i| w.contains(&format!("{}.weight", keys.ada(i, false))))
            .count();
        if depth == 0 || depth > MAX_DEPTH {
            return input(format!(
                "found {depth} transformer blocks in the weights; expected 1 to {MAX_DEPTH}"
            ));
        }
        let pos_name = keys.pos_embed();
        let pos = w.get(&pos_name)?;
        let tokens = pos.shape.iter().rev().nth(1).copied().unwrap_or(0);
        let grid = (tokens as f64).sqrt().round() as usize;
        if pos.shape.last() != Some(&hidden) || grid == 0 || grid * grid != tokens {
            return input(format!(
                "'{}' {:?} is not a square grid of positions of width {hidden}",
                pos.name, pos.shape
            ));
        }
        let qk_name = keys.qk_norm(0, crate::models::mmdit::keys::Stream::Context, false);
        let (qk_norm, head_dim) = if w.contains(&qk_name) {
            (true, shape(&qk_name, 1)?[0])
        } else {
            (false, 64.min(hidden))
        };
        let dual_attention_layers = (0..depth)
            .filter(|&i| w.contains(&keys.attn2_probe(i)))
            .collect();
        let final_name = format!("{}.weight", keys.final_linear());
        let final_rows = shape(&final_name, 2)?[0];
        if !final_rows.is_multiple_of(p * p) {
            return input(format!(
                "tensor '{final_name}' has {final_rows} rows, not a multiple of {p}x{p} patches"
            ));
        }
        let context = shape(&format!("{}.weight", keys.context_embedder()), 2)?;
        let pooled = shape(&format!("{}.weight", keys.pooled_embedder(1)), 2)?;
        if !hidden.is_multiple_of(head_dim) {
            return input(format!(
                "hidden size {hidden} is not a multiple of head dim {head_dim}"
            ));
        }
        MmditConfig {
            depth,
            hidden,
            heads: hidden / head_dim,
            head_dim,
            patch: p,
            in_channels,
            out_channels: final_rows / (p * p),
            joint_attention_dim: context[1],
            pooled_dim: pooled[1],
            pos_embed_max_size: grid,
            qk_norm,
            dual_attention_layers,
            sample_size: (128).min(grid * p),
            source: "inferred from weights",
        }
        .checked()
    }

    /// What every configuration must satisfy whatever its source: the kernels' limits and a
    /// native size inside the position grid.
    fn checked(self) -> Result<MmditConfig> {
        if self.head_dim > MAX_HEAD_DIM || !self.head_dim.is_multiple_of(4) {
            return input(format!(
                "attention head dim {} is not supported (a multiple of 4 up to {MAX_HEAD_DIM})",
                self.head_dim
            ));
        }
        if self.depth > MAX_DEPTH || self.patch > 16 {
            return input(format!(
                "{} layers of patch {} are beyond what a real model has ({MAX_DEPTH} layers, patch 16)",
                self.depth, self.patch
            ));
        }
        if self.sample_size > self.pos_embed_max_size * self.patch {
            return input(format!(
                "sample_size {} (latents) exceeds the {}x{} position grid of patch {}",
                self.sample_size, self.pos_embed_max_size, self.pos_embed_max_size, self.patch
            ));
        }
        if let Some(&l) = self
            .dual_attention_layers
            .iter()
            .find(|&&l| l >= self.depth)
        {
            return input(format!(
                "dual attention layer {l} is outside the {} layers",
                self.depth
            ));
        }
        Ok(self)
    }

    /// The configuration and key format of a transformer's weights: a given config.json
    /// (a folder's own for diffusers-format weights, or `--config` for any), checked against
    /// what the tensors tell, else inferred from them.
    pub fn resolve(
        w: &WeightSet,
        json: Option<&serde_json::Value>,
    ) -> Result<(MmditConfig, KeyFormat)> {
        let format = KeyFormat::detect(w)?;
        let inferred = MmditConfig::infer(w, &format)?;
        let config = match json {
            Some(json) => MmditConfig::from_json(json, &inferred)?,
            None => inferred,
        };
        Ok((config, format))
    }
}

/// Bounds on any dim read from a file, depth and head dim: far past every real model, far
/// below what would overflow sizes computed from them.
const MAX_DIM: usize = 1 << 20;
const MAX_DEPTH: usize = 1024;
const MAX_HEAD_DIM: usize = noiseshift_kernels::ops::attention::MAX_HEAD_DIM;
