//! Fused scaled-dot-product attention over heads, with an online softmax (no L x L scores in
//! memory), any sequence lengths, and keys/values from one or two sources.
//!
//! Variants: `attention` reads everything from buffers (hardware GPUs), 64 queries per
//! workgroup sharing tiles of keys and values staged in workgroup memory; on software adapters
//! `attention_texture` first packs keys and values of both sources into one texture each
//! (llvmpipe fetches texels vectorised) and carries eight queries per invocation, and where
//! subgroups are 8 wide `attention_texture_subgroup` also shares each key and value texel
//! across the subgroup's lanes. Every kernel takes the same [`ScoreMods`] (a causal mask, an
//! additive bias per head), switched at build time.

use crate::context::{Bind, Gpu, Scratch};
use crate::error::{KernelError, Result, shape_err};
use crate::ops::pack::{PackRows, copy_rows, copyable, pack_rows};
use crate::ops::{expect_f32, expect_subgroups_of_8, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// Head dims the kernel holds in registers (a multiple of 4, at most this).
pub const MAX_HEAD_DIM: usize = 128;

/// Query rows per workgroup of attention.wgsl, and the vec4 of keys (as of values) it stages
/// per tile: 8 KiB each, so both fit the 16 KiB of workgroup memory every adapter has.
const BUFFER_ROWS: usize = 64;
const BUFFER_TILE_VEC4: usize = 512;

/// Keys per tile of attention.wgsl for head dim `d4` vec4. Software adapters, which run this
/// kernel only when asked, take tiles of four: llvmpipe unrolls the tile's loops and needed
/// 30 s (head dim 64) and 85 s (128) to compile the full tiles.
fn buffer_tile(gpu: &Gpu, d4: usize) -> usize {
    if gpu.caps.software {
        4
    } else {
        (BUFFER_TILE_VEC4 / d4).min(BUFFER_ROWS)
    }
}

/// Queries: rows of `tensor` ([B * len, cols]); head h of row r is columns off + h*d .. + d.
#[derive(Clone, Copy)]
pub struct QuerySource<'a> {
    pub tensor: &'a Tensor,
    pub len: usize,
    pub off: usize,
}

/// Keys and values: rows of `tensor` ([B * len, cols]) with k and v at column offsets.
#[derive(Clone, Copy)]
pub struct KvSource<'a> {
    pub tensor: &'a Tensor,
    pub len: usize,
    pub k_off: usize,
    pub v_off: usize,
}

/// Which kernel runs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionVariant {
    /// Buffers on hardware GPUs; on software adapters textures, through the subgroup kernel
    /// where subgroups are 8 wide.
    Auto,
    Buffer,
    /// attention_texture.wgsl, each invocation loading its own keys and values.
    Texture,
    /// attention_texture_subgroup.wgsl; needs subgroups exactly 8 wide.
    TextureSubgroup,
}

/// What changes the scores q k^T * scale before the softmax (text encoders; the diffusion
/// transformers use none).
#[derive(Clone, Copy, Default)]
pub struct ScoreMods<'a> {
    /// Key t (its index in the concatenated sources) is visible to query i only when t <= i
    /// (CLIP's causal mask).
    pub causal: bool,
    /// Added to every score: f32 [heads, Lq, Lk], shared by the batch (T5's relative position
    /// bias).
    pub bias: Option<&'a Tensor>,
}

/// softmax(q k^T * scale) v for every sample and head; keys/values are the concatenation of
/// `kv` sources (one or two) in order. Output [B, Lq, heads * head_dim].
pub fn attention(
    gpu: &Gpu,
    q: QuerySource<'_>,
    kv: &[KvSource<'_>],
    batch: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
) -> Result<Tensor> {
    attention_with(
        gpu,
        q,
        kv,
        batch,
        heads,
        head_dim,
        scale,
        AttentionVariant::Auto,
    )
}

/// [`attention`] with the kernel chosen by the caller.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    gpu: &Gpu,
    q: QuerySource<'_>,
    kv: &[KvSource<'_>],
    batch: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    variant: AttentionVariant,
) -> Result<Tensor> {
    attention_mods(
        gpu,
        q,
        kv,
        batch,
        heads,
        head_dim,
        scale,
        ScoreMods::default(),
        variant,
    )
}

/// [`attention_with`] with the scores changed by `mods` first.
#[allow(clippy::too_many_arguments)]
pub fn attention_mods(
    gpu: &Gpu,
    q: QuerySource<'_>,
    kv: &[KvSource<'_>],
    batch: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    mods: ScoreMods<'_>,
    variant: AttentionVariant,
) -> Result<Tensor> {
    const OP: &str = "attention";
    if head_dim == 0 || !head_dim.is_multiple_of(4) || head_dim > MAX_HEAD_DIM {
        return shape_err(
            OP,
            format!("head dim {head_dim} must be a multiple of 4 up to {MAX_HEAD_DIM}"),
        );
    }
    if kv.is_empty() || kv.len() > 2 {
        return shape_err(
            OP,
            format!("{} key/value sources given, 1 or 2 supported", kv.len()),
        );
    }
    let width = heads * head_dim;
    let check = |what: &str, t: &Tensor, len: usize, offs: &[usize]| -> Result<()> {
        expect_f32(OP, what, t)?;
        if t.rows() != batch * len {
            return shape_err(
                OP,
                format!(
                    "{what} {:?} has {} rows, expected {batch} x {len}",
                    t.shape(),
                    t.rows()
                ),
            );
        }
        if !t.cols().is_multiple_of(4) || offs.iter().any(|o| o % 4 != 0 || o + width > t.cols()) {
            return shape_err(
                OP,
                format!(
                    "{what} {:?}: offsets {offs:?} + {width} must fit the row, all multiples of 4",
                    t.shape()
                ),
            );
        }
        Ok(())
    };
    check("query", q.tensor, q.len, &[q.off])?;
    for (i, s) in kv.iter().enumerate() {
        check(
            if i == 0 { "key/value 1" } else { "key/value 2" },
            s.tensor,
            s.len,
            &[s.k_off, s.v_off],
        )?;
    }
    let lk: usize = kv.iter().map(|s| s.len).sum();
    if lk == 0 {
        return shape_err(OP, "no keys to attend to");
    }
    if q.len == 0 {
        return shape_err(OP, "no queries");
    }
    if let Some(bias) = mods.bias {
        expect_f32(OP, "bias", bias)?;
        if bias.shape() != [heads, q.len, lk] {
            return shape_err(
                OP,
                format!(
                    "bias {:?} must be [heads, Lq, Lk] = [{heads}, {}, {lk}]",
                    bias.shape(),
                    q.len
                ),
            );
        }
    }
    let out = Tensor::empty(gpu, &[batch, q.len, width], DType::F32)?;
    let subgroup = gpu.caps.subgroup_width == Some(8);
    let texture = match variant {
        AttentionVariant::Auto if gpu.caps.software => Some(subgroup),
        AttentionVariant::Auto | AttentionVariant::Buffer => None,
        AttentionVariant::Texture => Some(false),
        AttentionVariant::TextureSubgroup => {
            expect_subgroups_of_8(gpu, "attention")?;
            Some(true)
        }
    };
    if let Some(subgroup) = texture {
        let shape = [batch, heads, head_dim];
        attention_texture(gpu, q, kv, shape, scale, mods, subgroup, &out)?;
        return Ok(out);
    }
    let second = kv.get(1).copied().unwrap_or(KvSource {
        tensor: kv[0].tensor,
        len: 0,
        k_off: 0,
        v_off: 0,
    });
    let (a, b) = (kv[0], second);
    let params = [
        batch as u32,
        heads as u32,
        scale.to_bits(),
        q.len as u32,
        q.tensor.cols() as u32,
        q.off as u32,
        a.len as u32,
        a.tensor.cols() as u32,
        a.k_off as u32,
        a.v_off as u32,
        b.len as u32,
        b.tensor.cols() as u32,
        b.k_off as u32,
        b.v_off as u32,
    ];
    let work = (batch * heads * q.len * lk) as f64 * head_dim as f64;
    let bytes = 4.0 * (batch as f64) * width as f64 * (2.0 * q.len as f64 + 2.0 * lk as f64);
    let d4 = head_dim / 4;
    let kernel = score_defines(
        Kernel::new(OP, &["attention.wgsl"])
            .define("D4", d4 as u32)
            .define("TK", buffer_tile(gpu, d4) as u32),
        mods,
    );
    gpu.dispatch(
        &kernel,
        words(&params),
        &[
            q.tensor.bind("query"),
            a.tensor.bind("key/value 1"),
            b.tensor.bind("key/value 2"),
            out.bind("out"),
            bias_bind(gpu, mods),
        ],
        [
            q.len.div_ceil(BUFFER_ROWS) as u32,
            heads as u32,
            batch as u32,
        ],
        Cost::new(4.0 * work, bytes),
    )?;
    Ok(out)
}

/// The build-time score switches of every attention kernel; trusted (no runtime bounds checks),
/// as the wrapper has checked every operand's extent.
fn score_defines(kernel: Kernel, mods: ScoreMods<'_>) -> Kernel {
    kernel
        .define("CAUSAL", mods.causal as u32)
        .define("BIAS", mods.bias.is_some() as u32)
        .trusted()
}

fn bias_bind<'a>(gpu: &'a Gpu, mods: ScoreMods<'a>) -> Bind<'a> {
    mods.bias.map_or_else(|| gpu.unused(), |t| t.bind("bias"))
}

/// Pack the k (or v) columns of every source into one texture: row b * lk + offset + t (by
/// copies where the source allows, see `copyable`).
fn pack_sources(
    gpu: &Gpu,
    slot: Scratch,
    kv: &[KvSource<'_>],
    values: bool,
    batches: std::ops::Range<usize>,
    width: usize,
) -> Result<wgpu::TextureView> {
    let lk: usize = kv.iter().map(|s| s.len).sum();
    let nb = batches.len();
    let (tex, view) = gpu.scratch_texture(slot, (width / 4) as u32, (nb * lk) as u32)?;
    let mut row_off = 0;
    for s in kv {
        let p = PackRows {
            texels: width / 4,
            rows: nb * s.len,
            stride: s.tensor.cols(),
            col_off: if values { s.v_off } else { s.k_off },
            rows_per_batch: s.len,
            dst_rows_per_batch: lk,
            dst_row_off: row_off,
            src_row0: batches.start * s.len,
        };
        if copyable(&p) {
            copy_rows(gpu, s.tensor.buffer(), 0, &tex, &p);
        } else {
            pack_rows(
                gpu,
                "attention_pack",
                s.tensor.bind(if values { "values" } else { "keys" }),
                &view,
                p,
            )?;
        }
        row_off += s.len;
    }
    Ok(view)
}

/// Queries per invocation of both texture kernels, and invocations per workgroup (queries x
/// heads) of attention_texture.wgsl; the subgroup kernel's workgroup is one subgroup of 8 along
/// the queries.
const TEX_TQ: usize = 8;
const TEX_WG: [usize; 2] = [16, 4];

/// `shape`: batch, heads, head dim.
#[allow(clippy::too_many_arguments)]
fn attention_texture(
    gpu: &Gpu,
    q: QuerySource<'_>,
    kv: &[KvSource<'_>],
    [batch, heads, head_dim]: [usize; 3],
    scale: f32,
    mods: ScoreMods<'_>,
    subgroup: bool,
    out: &Tensor,
) -> Result<()> {
    let width = heads * head_dim;
    let lk: usize = kv.iter().map(|s| s.len).sum();
    let max = gpu.limits.max_texture_dimension_2d as usize;
    if lk > max || width / 4 > max {
        return Err(KernelError::TooLarge {
            what: format!("attention over {lk} keys of width {width}"),
            bytes: lk.max(width / 4) as u64,
            limit: max as u64,
            limit_name: "max_texture_dimension_2d",
        });
    }
    let per = (max / lk).max(1);
    let (name, file, wg) = if subgroup {
        (
            "attention_texture_subgroup",
            "attention_texture_subgroup.wgsl",
            [8, 1],
        )
    } else {
        ("attention_texture", "attention_texture.wgsl", TEX_WG)
    };
    let kernel = score_defines(
        Kernel::new(name, &["attention_texture_io.wgsl", file]).define("D4", (head_dim / 4) as u32),
        mods,
    );
    for b0 in (0..batch).step_by(per) {
        let batches = b0..(b0 + per).min(batch);
        let keys = pack_sources(gpu, Scratch::Keys, kv, false, batches.clone(), width)?;
        let values = pack_sources(gpu, Scratch::Values, kv, true, batches.clone(), width)?;
        let params = [
            heads as u32,
            scale.to_bits(),
            q.len as u32,
            q.tensor.cols() as u32,
            q.off as u32,
            lk as u32,
            b0 as u32,
        ];
        let nb = batches.len();
        let work = (nb * heads * q.len) as f64 * lk as f64 * head_dim as f64;
        gpu.dispatch(
            &kernel,
            words(&params),
            &[
                q.tensor.bind("query"),
                Bind::Texture(&keys),
                Bind::Texture(&values),
                out.bind("out"),
                bias_bind(gpu, mods),
            ],
            [
                q.len.div_ceil(TEX_TQ * wg[0]) as u32,
                heads.div_ceil(wg[1]) as u32,
                nb as u32,
            ],
            Cost::new(
                4.0 * work,
                4.0 * (nb * width) as f64 * (2.0 * q.len as f64 + 2.0 * lk as f64),
            ),
        )?;
    }
    Ok(())
}
