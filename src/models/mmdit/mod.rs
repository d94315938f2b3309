//! The SD3 / SD3.5 MMDiT transformer (with MMDiT-X dual attention), as op calls.
//!
//! Forward: patch embedding + cropped stored position table; timestep and pooled-text MLPs
//! summed into the conditioning c; the text tokens through the context embedder; joint blocks
//! (adaLN-modulated LayerNorm, joint attention over both streams, optional second attention on
//! image tokens, gated residuals, GELU-tanh MLPs); final modulated norm, linear, unpatchify.
//! Every batch row carries its own timestep, so one forward can evaluate many noise levels.

pub mod config;
pub mod keys;

use std::cell::RefCell;

use noiseshift_kernels::ops::layout::PatchOrder;
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Tensor};

pub use config::MmditConfig;
pub use keys::KeyFormat;
use keys::Stream;

use crate::error::{Result, input};
use crate::models::joint::{
    Dims, JointBlock, SelfAttention, StreamNames, StreamWeights, TextConditioning, load_qkv,
    modulated_norm,
};
use crate::models::linear::{Linear, load_vector};
use crate::weights::WeightSet;

pub struct Mmdit {
    pub config: MmditConfig,
    pub format: KeyFormat,
    pos_embed: Tensor,
    patch_embed: Linear,
    time: [Linear; 2],
    pooled: [Linear; 2],
    context_embedder: Linear,
    blocks: Vec<JointBlock>,
    final_ada: Linear,
    final_linear: Linear,
    /// Chunk indices of (shift, scale) in two-chunk modulations (format dependent).
    shift_scale: (usize, usize),
    /// The cropped position table of the last patch grid used.
    pos_cache: RefCell<Option<((usize, usize), Tensor)>>,
}

impl Mmdit {
    /// Upload the transformer; `config_json` is the diffusers config.json when there is one.
    pub fn load(
        gpu: &Gpu,
        w: &WeightSet,
        config_json: Option<&serde_json::Value>,
    ) -> Result<Mmdit> {
        let (config, format) = MmditConfig::resolve(w, config_json)?;
        let c = &config;
        let d = c.hidden;
        let pos_name = format.pos_embed();
        let grid2 = c.pos_embed_max_size * c.pos_embed_max_size;
        let pos = w.get(&pos_name)?;
        if pos.shape.iter().product::<usize>() != grid2 * d || pos.shape.last() != Some(&d) {
            return input(format!(
                "tensor '{pos_name}' in {} has shape {:?}, expected [1, {grid2}, {d}]",
                pos.path.display(),
                pos.shape
            ));
        }
        let pos_embed = pos.upload_as(gpu, &[grid2, d])?;
        let patch_embed = Linear::load_reshaped(
            gpu,
            w,
            &format.patch_embed(),
            &[d, c.in_channels, c.patch, c.patch],
            d,
        )?;
        let time = [
            Linear::load(gpu, w, &format.time_embedder(1), d, 256)?,
            Linear::load(gpu, w, &format.time_embedder(2), d, d)?,
        ];
        let pooled = [
            Linear::load(gpu, w, &format.pooled_embedder(1), d, c.pooled_dim)?,
            Linear::load(gpu, w, &format.pooled_embedder(2), d, d)?,
        ];
        let context_embedder =
            Linear::load(gpu, w, &format.context_embedder(), d, c.joint_attention_dim)?;
        let blocks = (0..c.depth)
            .map(|i| load_block(gpu, w, &format, c, i))
            .collect::<Result<Vec<_>>>()?;
        let final_ada = Linear::load(gpu, w, &format.final_ada(), 2 * d, d)?;
        let final_linear = Linear::load(
            gpu,
            w,
            &format.final_linear(),
            c.patch * c.patch * c.out_channels,
            d,
        )?;
        // Uploads went through the queue; submit them now so the staging memory is released.
        gpu.finish()?;
        Ok(Mmdit {
            shift_scale: format.shift_scale_pair(),
            format,
            config,
            pos_embed,
            patch_embed,
            time,
            pooled,
            context_embedder,
            blocks,
            final_ada,
            final_linear,
            pos_cache: RefCell::new(None),
        })
    }

    /// Check a latent batch against the model: channels, patch multiples, position grid.
    pub fn check_latents(&self, shape: &[usize]) -> Result<()> {
        let c = &self.config;
        let [_, ch, h, w] = *shape else {
            return input(format!("latents must be [B, C, H, W], got {shape:?}"));
        };
        if ch != c.in_channels {
            return input(format!(
                "latents have {ch} channels, the model takes {}",
                c.in_channels
            ));
        }
        if h == 0 || w == 0 || h % c.patch != 0 || w % c.patch != 0 {
            return input(format!(
                "latent size {h}x{w} is not a multiple of the patch size {}: width and height must be multiples of {} pixels",
                c.patch,
                8 * c.patch
            ));
        }
        let m = c.pos_embed_max_size;
        if h / c.patch > m || w / c.patch > m {
            return input(format!(
                "latent size {h}x{w} ({}x{} patches) exceeds the model's {m}x{m} position grid (at most {} pixels a side)",
                h / c.patch,
                w / c.patch,
                m * c.patch * 8
            ));
        }
        Ok(())
    }

    /// The position table cropped to the centre h x w patches.
    fn positions(&self, gpu: &Gpu, gh: usize, gw: usize) -> Result<Tensor> {
        if let Some((key, t)) = self.pos_cache.borrow().as_ref()
            && *key == (gh, gw)
        {
            return Ok(t.clone());
        }
        let m = self.config.pos_embed_max_size;
        let t =
            ops::layout::crop_grid(gpu, &self.pos_embed, m, (m - gh) / 2, (m - gw) / 2, gh, gw)?;
        *self.pos_cache.borrow_mut() = Some(((gh, gw), t.clone()));
        Ok(t)
    }

    /// Velocity with classifier-free guidance: `text` holds B unconditional rows then B
    /// conditional ones (see `TextConditioning::stack`); x runs twice in one batch and the two
    /// halves combine as u + g (c - u).
    pub fn forward_guided(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        sigmas: &[f64],
        text: &TextConditioning,
        guidance: f32,
    ) -> Result<Tensor> {
        let both = ops::layout::concat_batch(gpu, x, x)?;
        let levels: Vec<f64> = sigmas.iter().chain(sigmas).copied().collect();
        let v = self.forward(gpu, &both, &levels, text)?;
        Ok(ops::euler::cfg_combine(gpu, &v, guidance)?)
    }

    /// Velocity for latents [B, C, H, W] at per-row noise levels `sigmas` (timestep 1000 sigma).
    pub fn forward(
        &self,
        gpu: &Gpu,
        latents: &Tensor,
        sigmas: &[f64],
        text: &TextConditioning,
    ) -> Result<Tensor> {
        let c = &self.config;
        self.check_latents(latents.shape())?;
        let [b, _, h, w] = *latents.shape() else {
            unreachable!("checked")
        };
        let text_len = text.check(b, sigmas.len(), c.joint_attention_dim, c.pooled_dim)?;
        let (gh, gw) = (h / c.patch, w / c.patch);
        let dims = Dims {
            batch: b,
            image: gh * gw,
            text: text_len,
            hidden: c.hidden,
            heads: c.heads,
            head_dim: c.head_dim,
        };

        let tokens = ops::layout::patchify(gpu, latents, c.patch, PatchOrder::ChannelFirst)?;
        let x = self.patch_embed.forward(gpu, &tokens, Act::None)?;
        let x = ops::elementwise::add(gpu, &x, &self.positions(gpu, gh, gw)?)?;

        let t: Vec<f64> = sigmas.iter().map(|s| 1000.0 * s).collect();
        let t_feat = ops::embed::timestep_embedding(gpu, &t, 256)?;
        let t_emb = self.time[1].forward(
            gpu,
            &self.time[0].forward(gpu, &t_feat, Act::Silu)?,
            Act::None,
        )?;
        let p_emb = self.pooled[1].forward(
            gpu,
            &self.pooled[0].forward(gpu, &text.pooled, Act::Silu)?,
            Act::None,
        )?;
        let cond = ops::elementwise::add(gpu, &t_emb, &p_emb)?;
        let silu_c = ops::activation::activation(gpu, &cond, Act::Silu)?;

        let ctx = self
            .context_embedder
            .forward(gpu, &text.embeds, Act::None)?;
        let last = self.blocks.len() - 1;
        for (i, block) in self.blocks.iter().enumerate() {
            let ctx_mod = if i == last { self.shift_scale } else { (0, 1) };
            block.forward(gpu, &x, &ctx, &silu_c, &dims, ctx_mod, None)?;
        }

        let (shift, scale) = self.shift_scale;
        let fmod = self.final_ada.forward(gpu, &silu_c, Act::None)?;
        let xn = modulated_norm(gpu, &x, &fmod, dims.image, shift, scale)?;
        let out = self.final_linear.forward(gpu, &xn, Act::None)?;
        Ok(ops::layout::unpatchify(
            gpu,
            &out,
            c.out_channels,
            h,
            w,
            c.patch,
            PatchOrder::ChannelLast,
        )?)
    }
}

/// The weight names of stream `s` of block i; `full` is false for the last block's text
/// stream, which only feeds keys and values.
fn stream_names(f: &KeyFormat, c: &MmditConfig, i: usize, s: Stream, full: bool) -> StreamNames {
    let dual = s == Stream::Image && c.dual_attention_layers.contains(&i);
    let chunks = match (full, dual) {
        (false, _) => 2,
        (true, true) => 9,
        (true, false) => 6,
    };
    // The text stream of the last block never uses its queries: skip their norm.
    let norm = |key: bool| (c.qk_norm && (full || key)).then(|| f.qk_norm(i, s, key));
    StreamNames {
        ada: f.ada(i, s == Stream::Context),
        chunks,
        qkv: f.qkv(i, s),
        norm_q: norm(false),
        norm_k: norm(true),
        out: full.then(|| [f.proj(i, s), f.mlp(i, s, 1), f.mlp(i, s, 2)]),
    }
}

fn load_block(
    gpu: &Gpu,
    w: &WeightSet,
    f: &KeyFormat,
    c: &MmditConfig,
    i: usize,
) -> Result<JointBlock> {
    let pre_only = i + 1 == c.depth;
    let attn2 = if c.dual_attention_layers.contains(&i) {
        let norm = |key: bool| -> Result<Option<Tensor>> {
            c.qk_norm
                .then(|| load_vector(gpu, w, &f.attn2_norm(i, key), c.head_dim))
                .transpose()
        };
        Some(SelfAttention {
            qkv: load_qkv(gpu, w, &f.attn2_qkv(i), c.hidden)?,
            proj: Linear::load(gpu, w, &f.attn2_proj(i), c.hidden, c.hidden)?,
            norm_q: norm(false)?,
            norm_k: norm(true)?,
        })
    } else {
        None
    };
    let stream = |s: Stream, full: bool| {
        StreamWeights::load(
            gpu,
            w,
            &stream_names(f, c, i, s, full),
            c.hidden,
            c.head_dim,
        )
    };
    Ok(JointBlock {
        image: stream(Stream::Image, true)?,
        context: stream(Stream::Context, !pre_only)?,
        attn2,
    })
}
