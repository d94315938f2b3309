//! The two-stream block SD3's MMDiT and FLUX's double-stream blocks share: per stream an
//! adaLN-modulated LayerNorm, a qkv projection (with RMSNorm on q and k where the model has
//! it, and rotary positions on the image stream's where given), one attention over both
//! streams' tokens, gated residuals and GELU-tanh MLPs. The families differ only in their
//! weight names (resolved by each family into [`StreamNames`]), SD3's pre-only last text
//! stream and MMDiT-X's second image attention.

use noiseshift_kernels::ops::attention::{KvSource, QuerySource};
use noiseshift_kernels::ops::norm::{Heads, Modulation};
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Tensor};

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
    /// Check the conditioning against a batch of `b` latents with `levels` noise levels and a
    /// model taking `joint`-wide tokens and `pooled`-wide vectors; the text length.
    pub fn check(&self, b: usize, levels: usize, joint: usize, pooled: usize) -> Result<usize> {
        if levels != b {
            return input(format!("{levels} noise levels for a batch of {b}"));
        }
        let shape = self.embeds.shape();
        if shape.len() != 3 || shape[0] != b || shape[2] != joint {
            return input(format!(
                "prompt embeddings {shape:?} must be [{b}, L, {joint}]"
            ));
        }
        if self.pooled.shape() != [b, pooled] {
            return input(format!(
                "pooled embeddings {:?} must be [{b}, {pooled}]",
                self.pooled.shape()
            ));
        }
        Ok(shape[1])
    }

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

/// Where a projection's weight lives: one tensor, or q, k and v to stack.
pub enum Qkv {
    Fused(String),
    Split([String; 3]),
}

/// The weight names of one stream of a block.
pub struct StreamNames {
    /// The modulation linear and its number of D-wide chunks.
    pub ada: String,
    pub chunks: usize,
    pub qkv: Qkv,
    /// RMSNorm weights of q and k (`None` where the model has no qk norm, or the query is unused).
    pub norm_q: Option<String>,
    pub norm_k: Option<String>,
    /// Output projection and MLP layers; `None` for a stream that only feeds keys and values.
    pub out: Option<[String; 3]>,
}

/// Sizes of one forward.
pub struct Dims {
    pub batch: usize,
    pub image: usize,
    pub text: usize,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// Rotary tables for the image tokens (FLUX): cos and sin [tokens, head_dim / 2].
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    /// Rotate every head of q (columns 0..D) and k (D..2D) of a fused qkv activation.
    pub fn apply(&self, gpu: &Gpu, qkv: &Tensor, dims: &Dims) -> Result<()> {
        for col_off in [0, dims.hidden] {
            let heads = Heads {
                col_off,
                heads: dims.heads,
                d: dims.head_dim,
            };
            ops::rope::rope(gpu, qkv, heads, &self.cos, &self.sin)?;
        }
        Ok(())
    }
}

pub fn load_qkv(gpu: &Gpu, w: &WeightSet, qkv: &Qkv, d: usize) -> Result<Linear> {
    match qkv {
        Qkv::Fused(name) => Linear::load(gpu, w, name, 3 * d, d),
        Qkv::Split(names) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Linear::load_fused(gpu, w, &names, &[d, d, d], d)
        }
    }
}

/// One stream (image or text) of a joint block.
pub struct StreamWeights {
    ada: Linear,
    qkv: Linear,
    norm_q: Option<Tensor>,
    norm_k: Option<Tensor>,
    /// Absent for SD3's last text stream, which only feeds keys and values.
    proj: Option<Linear>,
    fc1: Option<Linear>,
    fc2: Option<Linear>,
}

impl StreamWeights {
    /// Upload a stream of width `d`, heads of `head_dim`, MLP 4d wide.
    pub fn load(
        gpu: &Gpu,
        w: &WeightSet,
        n: &StreamNames,
        d: usize,
        head_dim: usize,
    ) -> Result<StreamWeights> {
        let norm = |name: &Option<String>| -> Result<Option<Tensor>> {
            name.as_ref()
                .map(|name| load_vector(gpu, w, name, head_dim))
                .transpose()
        };
        let (proj, fc1, fc2) = match &n.out {
            Some([proj, fc1, fc2]) => (
                Some(Linear::load(gpu, w, proj, d, d)?),
                Some(Linear::load(gpu, w, fc1, 4 * d, d)?),
                Some(Linear::load(gpu, w, fc2, d, 4 * d)?),
            ),
            None => (None, None, None),
        };
        Ok(StreamWeights {
            ada: Linear::load(gpu, w, &n.ada, n.chunks * d, d)?,
            qkv: load_qkv(gpu, w, &n.qkv, d)?,
            norm_q: norm(&n.norm_q)?,
            norm_k: norm(&n.norm_k)?,
            proj,
            fc1,
            fc2,
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

/// MMDiT-X second self-attention over the image tokens.
pub struct SelfAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub norm_q: Option<Tensor>,
    pub norm_k: Option<Tensor>,
}

pub struct JointBlock {
    pub image: StreamWeights,
    pub context: StreamWeights,
    pub attn2: Option<SelfAttention>,
}

/// LayerNorm without affine (eps 1e-6), modulated by chunks `shift`, `scale` of `table`.
pub fn modulated_norm(
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

/// RMSNorm (eps 1e-6) over each head of q (columns 0..D) and k (D..2D) where weights are given.
pub fn qk_norm(
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

/// Attention of the queries of `q` (len rows per sample, at column 0) over keys and values
/// of `kv`, scale 1/sqrt(head_dim).
pub fn attend(
    gpu: &Gpu,
    q: &Tensor,
    len: usize,
    kv: &[KvSource<'_>],
    dims: &Dims,
) -> Result<Tensor> {
    Ok(ops::attention::attention(
        gpu,
        QuerySource {
            tensor: q,
            len,
            off: 0,
        },
        kv,
        dims.batch,
        dims.heads,
        dims.head_dim,
        1.0 / (dims.head_dim as f32).sqrt(),
    )?)
}

/// Keys and values at columns D and 2D of a fused qkv activation of `len` rows per sample.
pub fn fused_kv(qkv: &Tensor, len: usize, d: usize) -> KvSource<'_> {
    KvSource {
        tensor: qkv,
        len,
        k_off: d,
        v_off: 2 * d,
    }
}

impl JointBlock {
    /// Update the image tokens x [B, T, D] and (unless pre-only) the text tokens ctx in place;
    /// the text stream's norm reads chunks `ctx_mod` of its modulation; `rope` rotates the
    /// image stream's q and k (the text tokens sit at position 0, where rotation is identity).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        ctx: &Tensor,
        silu_c: &Tensor,
        dims: &Dims,
        ctx_mod: (usize, usize),
        rope: Option<&Rope>,
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
        if let Some(rope) = rope {
            rope.apply(gpu, &qkv_x, dims)?;
        }
        let kv = [fused_kv(&qkv_x, t, d), fused_kv(&qkv_c, l, d)];
        let attn_x = attend(gpu, &qkv_x, t, &kv, dims)?;
        let attn_c = if self.context.proj.is_some() {
            Some(attend(gpu, &qkv_c, l, &kv, dims)?)
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
            let o = attend(gpu, &qkv2, t, &[fused_kv(&qkv2, t, d)], dims)?;
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
