//! The FLUX.1 transformer (dev and schnell), as op calls.
//!
//! Forward: latents packed 2x2 into 64-channel tokens (channel order c, row, column); the
//! timestep, guidance (dev) and pooled CLIP-L MLPs summed into the conditioning vec; T5 tokens
//! through txt_in; double-stream blocks (the joint block SD3 uses, with qk RMSNorm and rotary
//! positions on the image stream); then the text and image tokens as one sequence through
//! single-stream blocks (one modulation, one input projection to q, k, v and the MLP, parallel
//! attention and GELU-tanh MLP, one output projection over both); the final modulated norm and
//! linear on the image tokens; unpacking. Rotary positions: text tokens at (0, 0, 0), which
//! rotates nothing, image tokens at (0, row, column). Every batch row carries its own timestep.
//!
//! Blocks are resident, or streamed (`--offload`): each uploaded from the memory-mapped
//! checkpoint just before it runs and freed after, the upload of block k+1 on the host while
//! the device computes block k (submitted first), so a device holds one block at a time.

pub mod config;
pub mod keys;

use std::cell::RefCell;
use std::rc::Rc;

use noiseshift_kernels::ops::layout::PatchOrder;
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Tensor};

pub use config::FluxConfig;
pub use keys::FluxKeys;
use keys::SingleInput;

use crate::error::{Result, input};
use crate::models::joint::{
    Dims, JointBlock, Rope, StreamWeights, TextConditioning, attend, fused_kv, load_qkv,
    modulated_norm, qk_norm,
};
use crate::models::linear::{Linear, load_vector};
use crate::models::stream::Layers;
use crate::weights::WeightSet;

/// RoPE base of FLUX.1.
const THETA: f64 = 10000.0;

/// Latents pack 2x2 into one token.
const PACK: usize = 2;

/// Rotary tables for the image tokens alone (double blocks) and for text then image tokens
/// (single blocks).
type RopePair = [Rc<Rope>; 2];

/// The tables of one (text length, grid rows, grid columns).
struct RopeCache {
    key: (usize, usize, usize),
    tables: RopePair,
}

/// A single-stream block.
struct SingleBlock {
    ada: Linear,
    qkv: Linear,
    mlp: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    out: Linear,
}

pub struct Flux<'w> {
    pub config: FluxConfig,
    pub keys: FluxKeys,
    weights: &'w WeightSet,
    img_in: Linear,
    txt_in: Linear,
    time: [Linear; 2],
    guidance: Option<[Linear; 2]>,
    pooled: [Linear; 2],
    double: Layers<JointBlock>,
    single: Layers<SingleBlock>,
    final_ada: Linear,
    final_linear: Linear,
    /// Rotary tables of the last (text length, grid) used.
    rope_cache: RefCell<Option<RopeCache>>,
}

impl<'w> Flux<'w> {
    /// Upload the transformer (its blocks only as they run when `stream`); `config_json` is
    /// the diffusers config.json when there is one.
    pub fn load(
        gpu: &Gpu,
        w: &'w WeightSet,
        config_json: Option<&serde_json::Value>,
        stream: bool,
    ) -> Result<Flux<'w>> {
        let (config, keys) = FluxConfig::resolve(w, config_json)?;
        let c = &config;
        let d = c.hidden;
        let mlp2 = |what: &str, inp: usize| -> Result<[Linear; 2]> {
            Ok([
                Linear::load(gpu, w, &keys.embedder(what, 1), d, inp)?,
                Linear::load(gpu, w, &keys.embedder(what, 2), d, d)?,
            ])
        };
        let guidance = if c.guidance_embeds {
            Some(mlp2("guidance", 256)?)
        } else {
            None
        };
        let mut flux = Flux {
            img_in: Linear::load(gpu, w, &keys.img_in(), d, c.in_channels)?,
            txt_in: Linear::load(gpu, w, &keys.txt_in(), d, c.joint_attention_dim)?,
            time: mlp2("timestep", 256)?,
            guidance,
            pooled: mlp2("text", c.pooled_dim)?,
            double: Layers::Streamed(0),
            single: Layers::Streamed(0),
            final_ada: Linear::load(gpu, w, &keys.final_ada(), 2 * d, d)?,
            final_linear: Linear::load(gpu, w, &keys.final_linear(), c.in_channels, d)?,
            rope_cache: RefCell::new(None),
            weights: w,
            config,
            keys,
        };
        let (nd, ns) = (flux.config.double_blocks, flux.config.single_blocks);
        flux.double = Layers::load(nd, stream, |i| flux.load_double(gpu, i))?;
        flux.single = Layers::load(ns, stream, |i| flux.load_single(gpu, i))?;
        gpu.finish()?;
        Ok(flux)
    }

    fn load_double(&self, gpu: &Gpu, i: usize) -> Result<JointBlock> {
        let c = &self.config;
        let stream = |text: bool| {
            let names = self.keys.double_stream(i, text);
            StreamWeights::load(gpu, self.weights, &names, c.hidden, c.head_dim)
        };
        Ok(JointBlock {
            image: stream(false)?,
            context: stream(true)?,
            attn2: None,
        })
    }

    fn load_single(&self, gpu: &Gpu, i: usize) -> Result<SingleBlock> {
        SingleBlock::load(gpu, self.weights, &self.keys, &self.config, i)
    }

    /// Stored bytes of the largest block and of everything outside the blocks: what must fit
    /// the device when blocks stream.
    pub fn block_bytes(w: &WeightSet, keys: &FluxKeys, c: &FluxConfig) -> (u64, u64) {
        let of = |prefix: &str| w.totals(prefix).1;
        let double = (0..c.double_blocks)
            .map(|i| of(&format!("{}{i}.", keys.double_prefix())))
            .max()
            .unwrap_or(0);
        let single = (0..c.single_blocks)
            .map(|i| of(&format!("{}{i}.", keys.single_prefix())))
            .max()
            .unwrap_or(0);
        let blocks: u64 = (0..c.double_blocks)
            .map(|i| of(&format!("{}{i}.", keys.double_prefix())))
            .chain((0..c.single_blocks).map(|i| of(&format!("{}{i}.", keys.single_prefix()))))
            .sum();
        (double.max(single), of(keys.prefix()) - blocks)
    }

    /// Check a latent batch [B, C, H, W] against the model: channels, even sides.
    pub fn check_latents(&self, shape: &[usize]) -> Result<()> {
        let c = self.config.latent_channels();
        let [_, ch, h, w] = *shape else {
            return input(format!("latents must be [B, C, H, W], got {shape:?}"));
        };
        if ch != c {
            return input(format!("latents have {ch} channels, the model takes {c}"));
        }
        if h == 0 || w == 0 || h % PACK != 0 || w % PACK != 0 {
            return input(format!(
                "latent size {h}x{w} is not a multiple of {PACK}: width and height must be multiples of 16 pixels"
            ));
        }
        Ok(())
    }

    /// Rotary tables for `text` tokens and a gh x gw grid of image tokens.
    fn rope(&self, gpu: &Gpu, text: usize, gh: usize, gw: usize) -> Result<RopePair> {
        let key = (text, gh, gw);
        if let Some(c) = self.rope_cache.borrow().as_ref()
            && c.key == key
        {
            return Ok(c.tables.clone());
        }
        let image: Vec<Vec<f64>> = (0..gh * gw)
            .map(|t| vec![0.0, (t / gw) as f64, (t % gw) as f64])
            .collect();
        let joint: Vec<Vec<f64>> = std::iter::repeat_n(vec![0.0; 3], text)
            .chain(image.iter().cloned())
            .collect();
        let half = self.config.head_dim / 2;
        let upload = |positions: &[Vec<f64>]| -> Result<Rc<Rope>> {
            let (cos, sin) = ops::rope::rope_tables(positions, &self.config.axes_dims, THETA);
            let shape = [positions.len(), half];
            Ok(Rc::new(Rope {
                cos: Tensor::from_f32(gpu, &shape, &cos)?,
                sin: Tensor::from_f32(gpu, &shape, &sin)?,
            }))
        };
        let tables = [upload(&image)?, upload(&joint)?];
        *self.rope_cache.borrow_mut() = Some(RopeCache {
            key,
            tables: tables.clone(),
        });
        Ok(tables)
    }

    /// Velocity for latents [B, C, H, W] at per-row noise levels `sigmas` (the model sees
    /// 1000 sigma); `guidance` feeds the guidance embedding of FLUX.1-dev (ignored by models
    /// without one).
    pub fn forward(
        &self,
        gpu: &Gpu,
        latents: &Tensor,
        sigmas: &[f64],
        text: &TextConditioning,
        guidance: f64,
    ) -> Result<Tensor> {
        let c = &self.config;
        self.check_latents(latents.shape())?;
        let [b, _, h, w] = *latents.shape() else {
            unreachable!("checked")
        };
        if self.guidance.is_some() && !guidance.is_finite() {
            return input(format!("guidance must be a finite number, got {guidance}"));
        }
        let l = text.check(b, sigmas.len(), c.joint_attention_dim, c.pooled_dim)?;
        let (gh, gw) = (h / PACK, w / PACK);
        let dims = Dims {
            batch: b,
            image: gh * gw,
            text: l,
            hidden: c.hidden,
            heads: c.heads,
            head_dim: c.head_dim,
        };

        let tokens = ops::layout::patchify(gpu, latents, PACK, PatchOrder::ChannelFirst)?;
        let x = self.img_in.forward(gpu, &tokens, Act::None)?;
        let mlp = |layers: &[Linear; 2], input: &Tensor| -> Result<Tensor> {
            layers[1].forward(gpu, &layers[0].forward(gpu, input, Act::Silu)?, Act::None)
        };
        let t: Vec<f64> = sigmas.iter().map(|s| 1000.0 * s).collect();
        let mut vec = mlp(&self.time, &ops::embed::timestep_embedding(gpu, &t, 256)?)?;
        if let Some(g) = &self.guidance {
            let feat = ops::embed::timestep_embedding(gpu, &vec![1000.0 * guidance; b], 256)?;
            vec = ops::elementwise::add(gpu, &vec, &mlp(g, &feat)?)?;
        }
        let vec = ops::elementwise::add(gpu, &vec, &mlp(&self.pooled, &text.pooled)?)?;
        let silu_vec = ops::activation::activation(gpu, &vec, Act::Silu)?;

        let ctx = self.txt_in.forward(gpu, &text.embeds, Act::None)?;
        let [image_rope, joint_rope] = self.rope(gpu, l, gh, gw)?;
        let streamed = matches!(self.double, Layers::Streamed(_));
        for i in 0..self.double.len() {
            self.double.with(
                i,
                |i| self.load_double(gpu, i),
                |block| block.forward(gpu, &x, &ctx, &silu_vec, &dims, (0, 1), Some(&image_rope)),
            )?;
            if streamed {
                // The device starts on this block while the host uploads the next.
                gpu.flush()?;
            }
        }
        let joint = ops::layout::concat_tokens(gpu, &ctx, &x)?;
        drop((ctx, x));
        let joint_dims = Dims {
            image: l + gh * gw,
            text: 0,
            ..dims
        };
        for i in 0..self.single.len() {
            self.single.with(
                i,
                |i| self.load_single(gpu, i),
                |block| block.forward(gpu, &joint, &silu_vec, &joint_dims, &joint_rope),
            )?;
            if streamed {
                gpu.flush()?;
            }
        }
        let (_, x) = ops::layout::split_tokens(gpu, &joint, l)?;

        let (shift, scale) = self.keys.shift_scale_pair();
        let fmod = self.final_ada.forward(gpu, &silu_vec, Act::None)?;
        let xn = modulated_norm(gpu, &x, &fmod, gh * gw, shift, scale)?;
        let out = self.final_linear.forward(gpu, &xn, Act::None)?;
        Ok(ops::layout::unpatchify(
            gpu,
            &out,
            c.latent_channels(),
            h,
            w,
            PACK,
            PatchOrder::ChannelFirst,
        )?)
    }
}

impl SingleBlock {
    fn load(
        gpu: &Gpu,
        w: &WeightSet,
        keys: &FluxKeys,
        c: &FluxConfig,
        i: usize,
    ) -> Result<SingleBlock> {
        let d = c.hidden;
        let (qkv, mlp) = match keys.single_input(i) {
            SingleInput::Split { qkv, mlp } => (
                load_qkv(gpu, w, &qkv, d)?,
                Linear::load(gpu, w, &mlp, 4 * d, d)?,
            ),
            SingleInput::Fused(name) => (
                Linear::load_rows(gpu, w, &name, 0..3 * d, 7 * d, d)?,
                Linear::load_rows(gpu, w, &name, 3 * d..7 * d, 7 * d, d)?,
            ),
        };
        Ok(SingleBlock {
            ada: Linear::load(gpu, w, &keys.single_ada(i), 3 * d, d)?,
            qkv,
            mlp,
            norm_q: load_vector(gpu, w, &keys.single_norm(i, false), c.head_dim)?,
            norm_k: load_vector(gpu, w, &keys.single_norm(i, true), c.head_dim)?,
            out: Linear::load(gpu, w, &keys.single_out(i), d, 5 * d)?,
        })
    }

    /// x [B, T, D] (text then image tokens) += gate * out([attn(n), gelu(mlp(n))]) with
    /// n = LN(x) * (1 + scale) + shift; modulation chunks (shift, scale, gate).
    fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        silu_vec: &Tensor,
        dims: &Dims,
        rope: &Rope,
    ) -> Result<()> {
        let (b, t, d) = (dims.batch, dims.image, dims.hidden);
        let m = self.ada.forward(gpu, silu_vec, Act::None)?;
        let n = modulated_norm(gpu, x, &m, t, 0, 1)?;
        let qkv = self
            .qkv
            .forward(gpu, &n, Act::None)?
            .reshape(&[b * t, 3 * d])?;
        let mlp = self.mlp.forward(gpu, &n, Act::GeluTanh)?;
        drop(n);
        qk_norm(gpu, &qkv, dims, Some(&self.norm_q), Some(&self.norm_k))?;
        rope.apply(gpu, &qkv, dims)?;
        let attn = attend(gpu, &qkv, t, &[fused_kv(&qkv, t, d)], dims)?;
        drop(qkv);
        // [attn | mlp] per row: a token concat of rows seen as [B T, width, 1].
        let both = ops::layout::concat_tokens(
            gpu,
            &attn.reshape(&[b * t, d, 1])?,
            &mlp.reshape(&[b * t, 4 * d, 1])?,
        )?
        .reshape(&[b, t, 5 * d])?;
        drop((attn, mlp));
        ops::modulate::gated_residual(gpu, x, &self.out.forward(gpu, &both, Act::None)?, &m, t, 2)?;
        Ok(())
    }
}
