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

use noiseshift_kernels::ops::attention::{KvSource, QuerySource};
use noiseshift_kernels::ops::layout::PatchOrder;
use noiseshift_kernels::ops::norm::{Heads, Modulation};
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Tensor};

pub use config::MmditConfig;
pub use keys::KeyFormat;
use keys::{Qkv, Stream};

use crate::error::{Result, input};
use crate::models::linear::{Linear, load_vector};
use crate::weights::WeightSet;

const NORM_EPS: f32 = 1e-6;

/// Text conditioning for a batch: token embeddings [B, L, joint_dim] and pooled [B, pooled_dim].
#[derive(Clone)]
pub struct TextConditioning {
    pub embeds: Tensor,
    pub pooled: Tensor,
}

impl TextConditioning {
    /// The rows of `first` followed by those of `second` (unconditional, then conditional).
    pub fn stack(
        gpu: &Gpu,
        first: &TextConditioning,
        second: &TextConditioning,
    ) -> Result<TextConditioning> {
        Ok(TextConditioning {
            embeds: ops::layout::concat_batch(gpu, &first.embeds, &second.embeds)?,
            pooled: ops::layout::concat_batch(gpu, &first.pooled, &second.pooled)?,
        })
    }
}

/// One stream (image or text) of a joint block.
struct StreamWeights {
    ada: Linear,
    qkv: Linear,
    norm_q: Option<Tensor>,
    norm_k: Option<Tensor>,
    /// Absent for the last block's text stream, which only feeds keys and values.
    proj: Option<Linear>,
    fc1: Option<Linear>,
    fc2: Option<Linear>,
}

/// MMDiT-X second self-attention over the image tokens.
struct SelfAttention {
    qkv: Linear,
    proj: Linear,
    norm_q: Option<Tensor>,
    norm_k: Option<Tensor>,
}

struct Block {
    image: StreamWeights,
    context: StreamWeights,
    attn2: Option<SelfAttention>,
}

pub struct Mmdit {
    pub config: MmditConfig,
    pub format: KeyFormat,
    pos_embed: Tensor,
    patch_embed: Linear,
    time: [Linear; 2],
    pooled: [Linear; 2],
    context_embedder: Linear,
    blocks: Vec<Block>,
    final_ada: Linear,
    final_linear: Linear,
    /// Chunk indices of (shift, scale) in two-chunk modulations (format dependent).
    shift_scale: (usize, usize),
    /// The cropped position table of the last patch grid used.
    pos_cache: RefCell<Option<((usize, usize), Tensor)>>,
}

fn load_qkv(gpu: &Gpu, w: &WeightSet, qkv: Qkv, d: usize) -> Result<Linear> {
    match qkv {
        Qkv::Fused(name) => Linear::load(gpu, w, &name, 3 * d, d),
        Qkv::Split(names) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Linear::load_fused(gpu, w, &names, &[d, d, d], d)
        }
    }
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
            .map(|i| Block::load(gpu, w, &format, c, i))
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
        if sigmas.len() != b {
            return input(format!("{} noise levels for a batch of {b}", sigmas.len()));
        }
        let text_shape = text.embeds.shape();
        if text_shape.len() != 3 || text_shape[0] != b || text_shape[2] != c.joint_attention_dim {
            return input(format!(
                "prompt embeddings {text_shape:?} must be [{b}, L, {}]",
                c.joint_attention_dim
            ));
        }
        if text.pooled.shape() != [b, c.pooled_dim] {
            return input(format!(
                "pooled embeddings {:?} must be [{b}, {}]",
                text.pooled.shape(),
                c.pooled_dim
            ));
        }
        let (gh, gw) = (h / c.patch, w / c.patch);
        let dims = Dims {
            batch: b,
            image: gh * gw,
            text: text_shape[1],
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
            block.forward(gpu, &x, &ctx, &silu_c, &dims, ctx_mod)?;
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

/// Sizes of one forward.
struct Dims {
    batch: usize,
    image: usize,
    text: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
}

impl StreamWeights {
    fn load(
        gpu: &Gpu,
        w: &WeightSet,
        f: &KeyFormat,
        c: &MmditConfig,
        i: usize,
        s: Stream,
        full: bool,
    ) -> Result<StreamWeights> {
        let d = c.hidden;
        let dual = s == Stream::Image && c.dual_attention_layers.contains(&i);
        let chunks = if !full {
            2
        } else if dual {
            9
        } else {
            6
        };
        let norm = |key: bool| -> Result<Option<Tensor>> {
            // The text stream of the last block never uses its queries: skip their norm.
            if !c.qk_norm || (!full && !key) {
                return Ok(None);
            }
            Ok(Some(load_vector(
                gpu,
                w,
                &f.qk_norm(i, s, key),
                c.head_dim,
            )?))
        };
        let opt = |load: &dyn Fn() -> Result<Linear>| -> Result<Option<Linear>> {
            if full { load().map(Some) } else { Ok(None) }
        };
        Ok(StreamWeights {
            ada: Linear::load(gpu, w, &f.ada(i, s == Stream::Context), chunks * d, d)?,
            qkv: load_qkv(gpu, w, f.qkv(i, s), d)?,
            norm_q: norm(false)?,
            norm_k: norm(true)?,
            proj: opt(&|| Linear::load(gpu, w, &f.proj(i, s), d, d))?,
            fc1: opt(&|| Linear::load(gpu, w, &f.mlp(i, s, 1), 4 * d, d))?,
            fc2: opt(&|| Linear::load(gpu, w, &f.mlp(i, s, 2), d, 4 * d))?,
        })
    }

    /// RMSNorm q and k of this stream's heads inside its qkv activation.
    fn norm_qk(&self, gpu: &Gpu, qkv: &Tensor, dims: &Dims) -> Result<()> {
        qk_norm(gpu, qkv, dims, self.norm_q.as_ref(), self.norm_k.as_ref())
    }

    /// x += gate_msa * proj(attn).
    fn attention_residual(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        attn: &Tensor,
        table: &Tensor,
        tokens: usize,
    ) -> Result<()> {
        let proj = self
            .proj
            .as_ref()
            .expect("only full streams update their tokens");
        ops::modulate::gated_residual(
            gpu,
            x,
            &proj.forward(gpu, attn, Act::None)?,
            table,
            tokens,
            2,
        )?;
        Ok(())
    }

    /// x += gate_mlp * fc2(gelu(fc1(LN(x) * (1 + scale_mlp) + shift_mlp))).
    fn mlp_residual(&self, gpu: &Gpu, x: &Tensor, table: &Tensor, tokens: usize) -> Result<()> {
        let (Some(fc1), Some(fc2)) = (&self.fc1, &self.fc2) else {
            unreachable!("only full streams update their tokens")
        };
        let n = modulated_norm(gpu, x, table, tokens, 3, 4)?;
        let h = fc1.forward(gpu, &n, Act::GeluTanh)?;
        ops::modulate::gated_residual(gpu, x, &fc2.forward(gpu, &h, Act::None)?, table, tokens, 5)?;
        Ok(())
    }
}

/// LayerNorm without affine (eps 1e-6), modulated by chunks `shift`, `scale` of `table`.
fn modulated_norm(
    gpu: &Gpu,
    x: &Tensor,
    table: &Tensor,
    tokens: usize,
    shift: usize,
    scale: usize,
) -> Result<Tensor> {
    let m = Modulation {
        table,
        tokens,
        shift,
        scale,
    };
    Ok(ops::norm::layer_norm(
        gpu,
        x,
        None,
        None,
        Some(m),
        NORM_EPS,
    )?)
}

fn qk_norm(
    gpu: &Gpu,
    qkv: &Tensor,
    dims: &Dims,
    q: Option<&Tensor>,
    k: Option<&Tensor>,
) -> Result<()> {
    for (weight, col_off) in [(q, 0), (k, dims.hidden)] {
        if let Some(weight) = weight {
            ops::norm::rms_norm_heads(
                gpu,
                qkv,
                Heads {
                    col_off,
                    heads: dims.heads,
                    d: dims.head_dim,
                },
                weight,
                NORM_EPS,
            )?;
        }
    }
    Ok(())
}

impl Block {
    fn load(gpu: &Gpu, w: &WeightSet, f: &KeyFormat, c: &MmditConfig, i: usize) -> Result<Block> {
        let pre_only = i + 1 == c.depth;
        let attn2 = if c.dual_attention_layers.contains(&i) {
            let norm = |key: bool| -> Result<Option<Tensor>> {
                if c.qk_norm {
                    Ok(Some(load_vector(
                        gpu,
                        w,
                        &f.attn2_norm(i, key),
                        c.head_dim,
                    )?))
                } else {
                    Ok(None)
                }
            };
            Some(SelfAttention {
                qkv: load_qkv(gpu, w, f.attn2_qkv(i), c.hidden)?,
                proj: Linear::load(gpu, w, &f.attn2_proj(i), c.hidden, c.hidden)?,
                norm_q: norm(false)?,
                norm_k: norm(true)?,
            })
        } else {
            None
        };
        Ok(Block {
            image: StreamWeights::load(gpu, w, f, c, i, Stream::Image, true)?,
            context: StreamWeights::load(gpu, w, f, c, i, Stream::Context, !pre_only)?,
            attn2,
        })
    }

    /// Update the image tokens x [B, T, D] and (unless pre-only) the text tokens ctx in place.
    fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        ctx: &Tensor,
        silu_c: &Tensor,
        dims: &Dims,
        ctx_mod: (usize, usize),
    ) -> Result<()> {
        let (b, t, l, d) = (dims.batch, dims.image, dims.text, dims.hidden);
        let mod_x = self.image.ada.forward(gpu, silu_c, Act::None)?;
        let mod_c = self.context.ada.forward(gpu, silu_c, Act::None)?;
        let nx = modulated_norm(gpu, x, &mod_x, t, 0, 1)?;
        let nc = modulated_norm(gpu, ctx, &mod_c, l, ctx_mod.0, ctx_mod.1)?;
        // MMDiT-X: the second attention reads LN(x) of the block input under its own modulation.
        let nx2 = match &self.attn2 {
            Some(_) => Some(modulated_norm(gpu, x, &mod_x, t, 6, 7)?),
            None => None,
        };
        let qkv_x = self
            .image
            .qkv
            .forward(gpu, &nx, Act::None)?
            .reshape(&[b * t, 3 * d])?;
        let qkv_c = self
            .context
            .qkv
            .forward(gpu, &nc, Act::None)?
            .reshape(&[b * l, 3 * d])?;
        drop((nx, nc));
        self.image.norm_qk(gpu, &qkv_x, dims)?;
        self.context.norm_qk(gpu, &qkv_c, dims)?;
        let scale = 1.0 / (dims.head_dim as f32).sqrt();
        let kv = [
            KvSource {
                tensor: &qkv_x,
                len: t,
                k_off: d,
                v_off: 2 * d,
            },
            KvSource {
                tensor: &qkv_c,
                len: l,
                k_off: d,
                v_off: 2 * d,
            },
        ];
        let attend = |q: &Tensor, len: usize| {
            ops::attention::attention(
                gpu,
                QuerySource {
                    tensor: q,
                    len,
                    off: 0,
                },
                &kv,
                b,
                dims.heads,
                dims.head_dim,
                scale,
            )
        };
        let attn_x = attend(&qkv_x, t)?;
        let attn_c = if self.context.proj.is_some() {
            Some(attend(&qkv_c, l)?)
        } else {
            None
        };
        drop((qkv_x, qkv_c));

        self.image.attention_residual(gpu, x, &attn_x, &mod_x, t)?;
        if let (Some(a2), Some(nx2)) = (&self.attn2, nx2) {
            let qkv2 = a2
                .qkv
                .forward(gpu, &nx2, Act::None)?
                .reshape(&[b * t, 3 * d])?;
            qk_norm(gpu, &qkv2, dims, a2.norm_q.as_ref(), a2.norm_k.as_ref())?;
            let self_kv = [KvSource {
                tensor: &qkv2,
                len: t,
                k_off: d,
                v_off: 2 * d,
            }];
            let o = ops::attention::attention(
                gpu,
                QuerySource {
                    tensor: &qkv2,
                    len: t,
                    off: 0,
                },
                &self_kv,
                b,
                dims.heads,
                dims.head_dim,
                scale,
            )?;
            ops::modulate::gated_residual(
                gpu,
                x,
                &a2.proj.forward(gpu, &o, Act::None)?,
                &mod_x,
                t,
                8,
            )?;
        }
        self.image.mlp_residual(gpu, x, &mod_x, t)?;
        if let Some(attn_c) = attn_c {
            self.context
                .attention_residual(gpu, ctx, &attn_c, &mod_c, l)?;
            self.context.mlp_residual(gpu, ctx, &mod_c, l)?;
        }
        Ok(())
    }
}
