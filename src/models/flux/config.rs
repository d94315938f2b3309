//! FLUX.1 hyper-parameters, inferred from the weights (hidden from img_in, the block counts
//! from the keys present, head dim from the qk-norm weights, guidance embedding from its
//! tensors) and checked against config.json when there is one. Only the RoPE axis split cannot
//! be seen in the shapes: config.json's `axes_dims_rope`, else FLUX.1's (16, 56, 56) for head
//! dim 128.

use serde::Serialize;

use crate::error::{Result, input};
use crate::models::flux::keys::FluxKeys;
use crate::weights::WeightSet;

/// Bounds on any dim read from a file and on the block counts.
const MAX_DIM: usize = 1 << 20;
const MAX_BLOCKS: usize = 1024;
const MAX_HEAD_DIM: usize = noiseshift_kernels::ops::attention::MAX_HEAD_DIM;

/// FLUX.1's rotary axis split of its 128-wide heads (text index, row, column).
const FLUX_AXES: [usize; 3] = [16, 56, 56];

#[derive(Clone, Debug, Serialize)]
pub struct FluxConfig {
    pub double_blocks: usize,
    pub single_blocks: usize,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Packed 2x2 input channels (64 for 16 latent channels).
    pub in_channels: usize,
    pub joint_attention_dim: usize,
    pub pooled_dim: usize,
    pub guidance_embeds: bool,
    pub axes_dims: [usize; 3],
    /// "config.json" or "inferred from weights".
    pub source: &'static str,
}

/// The block index of a tensor named `<kind><index>.<...>`.
fn block_index(name: &str, kind: &str) -> Option<usize> {
    let rest = name.strip_prefix(kind)?;
    rest.split('.').next()?.parse().ok()
}

impl FluxConfig {
    /// Latent channels (before packing).
    pub fn latent_channels(&self) -> usize {
        self.in_channels / 4
    }

    /// "flux.1-dev" with a guidance embedding, "flux.1-schnell" without.
    pub fn family(&self) -> &'static str {
        if self.guidance_embeds {
            "flux.1-dev"
        } else {
            "flux.1-schnell"
        }
    }

    /// The configuration the tensors tell (unchecked: see `resolve`).
    fn infer(w: &WeightSet, keys: &FluxKeys) -> Result<FluxConfig> {
        let shape = |name: &str, rank: usize| w.shape_checked(name, rank, MAX_DIM);
        let [hidden, in_channels] = shape(&format!("{}.weight", keys.img_in()), 2)?[..] else {
            unreachable!("rank checked")
        };
        let count = |probe: &dyn Fn(usize) -> String| {
            (0..MAX_BLOCKS + 1)
                .take_while(|&i| w.contains(&format!("{}.weight", probe(i))))
                .count()
        };
        let double_blocks = count(&|i| keys.double_ada(i, false));
        let single_blocks = count(&|i| keys.single_ada(i));
        // A block missing from the middle would silently shorten the model.
        for (kind, found) in [
            (keys.double_prefix(), double_blocks),
            (keys.single_prefix(), single_blocks),
        ] {
            let beyond = w.names().filter_map(|n| block_index(n, &kind)).max();
            if let Some(last) = beyond.filter(|&l| l >= found) {
                return input(format!(
                    "the weights hold {kind}{last} but not all of the blocks before it (block {found} lacks its modulation '{}')",
                    if kind == keys.double_prefix() {
                        keys.double_ada(found, false)
                    } else {
                        keys.single_ada(found)
                    }
                ));
            }
        }
        if double_blocks > MAX_BLOCKS || single_blocks > MAX_BLOCKS {
            return input(format!("more than {MAX_BLOCKS} FLUX blocks in the weights"));
        }
        if double_blocks + single_blocks == 0 {
            return input("the FLUX weights hold no double- or single-stream blocks");
        }
        let norm = match (double_blocks, single_blocks) {
            (0, _) => keys.single_norm(0, false),
            _ => keys
                .double_stream(0, false)
                .norm_q
                .expect("FLUX has qk norm"),
        };
        let head_dim = shape(&norm, 1)?[0];
        if !hidden.is_multiple_of(head_dim) || !in_channels.is_multiple_of(4) {
            return input(format!(
                "hidden size {hidden} is not a multiple of the head dim {head_dim}, or {in_channels} input channels are not 2x2-packed"
            ));
        }
        let context = shape(&format!("{}.weight", keys.txt_in()), 2)?;
        let pooled = shape(&format!("{}.weight", keys.embedder("text", 1)), 2)?;
        Ok(FluxConfig {
            double_blocks,
            single_blocks,
            hidden,
            heads: hidden / head_dim,
            head_dim,
            in_channels,
            joint_attention_dim: context[1],
            pooled_dim: pooled[1],
            guidance_embeds: w.contains(&format!("{}.weight", keys.embedder("guidance", 1))),
            // The split is invisible in the shapes: FLUX.1's where the head is FLUX.1's.
            axes_dims: if head_dim == 128 { FLUX_AXES } else { [0; 3] },
            source: "inferred from weights",
        })
    }

    /// `inferred` with what config.json says, which must agree with the weights.
    fn from_json(json: &serde_json::Value, inferred: FluxConfig) -> Result<FluxConfig> {
        let get = |k: &str| json.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
        let i = &inferred;
        for (k, found) in [
            ("num_layers", i.double_blocks),
            ("num_single_layers", i.single_blocks),
            ("attention_head_dim", i.head_dim),
            ("num_attention_heads", i.heads),
            ("in_channels", i.in_channels),
            ("joint_attention_dim", i.joint_attention_dim),
            ("pooled_projection_dim", i.pooled_dim),
        ] {
            if let Some(said) = get(k)
                && said != found
            {
                return input(format!(
                    "transformer config.json says {k} = {said}, but the weights have {found}"
                ));
            }
        }
        if let Some(g) = json.get("guidance_embeds").and_then(|v| v.as_bool())
            && g != i.guidance_embeds
        {
            return input(format!(
                "transformer config.json says guidance_embeds = {g}, but the weights {} a guidance embedder",
                if i.guidance_embeds { "have" } else { "lack" }
            ));
        }
        let mut cfg = inferred;
        match json.get("axes_dims_rope") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(a)) if a.len() == 3 => {
                for (k, v) in a.iter().enumerate() {
                    match v.as_u64() {
                        Some(d) if d <= MAX_DIM as u64 => cfg.axes_dims[k] = d as usize,
                        _ => return input(format!("axes_dims_rope holds {v}, not a width")),
                    }
                }
            }
            Some(other) => {
                return input(format!(
                    "transformer config.json: axes_dims_rope must be three widths, got {other}"
                ));
            }
        }
        cfg.source = "config.json";
        Ok(cfg)
    }

    /// The kernels' limits and a RoPE split that covers the head.
    fn checked(self) -> Result<FluxConfig> {
        if self.head_dim > MAX_HEAD_DIM || !self.head_dim.is_multiple_of(4) {
            return input(format!(
                "attention head dim {} is not supported (a multiple of 4 up to {MAX_HEAD_DIM})",
                self.head_dim
            ));
        }
        if self.axes_dims == [0; 3] {
            return input(format!(
                "head dim {} is not FLUX.1's 128: give the transformer's config.json (--config) for its axes_dims_rope",
                self.head_dim
            ));
        }
        let sum: usize = self.axes_dims.iter().sum();
        if sum != self.head_dim || self.axes_dims.iter().any(|d| d % 2 != 0) {
            return input(format!(
                "axes_dims_rope {:?} must be even widths summing to the head dim {}",
                self.axes_dims, self.head_dim
            ));
        }
        Ok(self)
    }

    /// The configuration and key format of a FLUX transformer's weights.
    pub fn resolve(
        w: &WeightSet,
        json: Option<&serde_json::Value>,
    ) -> Result<(FluxConfig, FluxKeys)> {
        let keys = FluxKeys::detect(w)?;
        let inferred = FluxConfig::infer(w, &keys)?;
        let config = match json {
            Some(json) => FluxConfig::from_json(json, inferred)?,
            None => inferred,
        };
        Ok((config.checked()?, keys))
    }
}
