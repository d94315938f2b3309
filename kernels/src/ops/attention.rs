//! Fused scaled-dot-product attention over heads, with an online softmax (no L x L scores in
//! memory), any sequence lengths, and keys/values from one or two sources.

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::{expect_f32, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// Head dims the kernel holds in registers (a multiple of 4, at most this).
pub const MAX_HEAD_DIM: usize = 128;

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
    const OP: &str = "attention";
    if head_dim == 0 || head_dim % 4 != 0 || head_dim > MAX_HEAD_DIM {
        return shape_err(OP, format!("head dim {head_dim} must be a multiple of 4 up to {MAX_HEAD_DIM}"));
    }
    if kv.is_empty() || kv.len() > 2 {
        return shape_err(OP, format!("{} key/value sources given, 1 or 2 supported", kv.len()));
    }
    let width = heads * head_dim;
    let check = |what: &str, t: &Tensor, len: usize, offs: &[usize]| -> Result<()> {
        expect_f32(OP, what, t)?;
        if t.rows() != batch * len {
            return shape_err(OP, format!("{what} {:?} has {} rows, expected {batch} x {len}", t.shape(), t.rows()));
        }
        if t.cols() % 4 != 0 || offs.iter().any(|o| o % 4 != 0 || o + width > t.cols()) {
            return shape_err(
                OP,
                format!("{what} {:?}: offsets {offs:?} + {width} must fit the row, all multiples of 4", t.shape()),
            );
        }
        Ok(())
    };
    check("query", q.tensor, q.len, &[q.off])?;
    for (i, s) in kv.iter().enumerate() {
        check(if i == 0 { "key/value 1" } else { "key/value 2" }, s.tensor, s.len, &[s.k_off, s.v_off])?;
    }
    if kv.iter().map(|s| s.len).sum::<usize>() == 0 {
        return shape_err(OP, "no keys to attend to");
    }
    let out = Tensor::empty(gpu, &[batch, q.len, width], DType::F32)?;
    let second = kv.get(1).copied().unwrap_or(KvSource { tensor: kv[0].tensor, len: 0, k_off: 0, v_off: 0 });
    let (a, b) = (kv[0], second);
    let params = [
        batch as u32,
        heads as u32,
        (head_dim / 4) as u32,
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
    let lk = (a.len + b.len) as f64;
    let work = (batch * heads * q.len) as f64 * lk * head_dim as f64;
    let bytes = 4.0 * (batch as f64) * width as f64 * (2.0 * q.len as f64 + 2.0 * lk);
    gpu.dispatch(
        &Kernel::new(OP, &["attention.wgsl"]).trusted(),
        words(&params),
        &[q.tensor.bind("query"), a.tensor.bind("key/value 1"), b.tensor.bind("key/value 2"), out.bind("out")],
        [q.len.div_ceil(64) as u32, heads as u32, batch as u32],
        Cost::new(4.0 * work, bytes),
    )?;
    Ok(out)
}
