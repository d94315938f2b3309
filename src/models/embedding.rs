//! Token embedding lookup. The table stays in host memory (memory-mapped, stored dtype) and only
//! the rows a prompt uses are widened and uploaded: T5-XXL's table alone is 263 MB of bf16 that
//! the device never needs to hold.

use noiseshift_kernels::{Gpu, Tensor};

use crate::error::{Result, input};
use crate::weights::WeightSet;

/// Rows `ids` (batch-major, [B, L]) of the table `name` [V, D], as f32 [B * L, D] on the device.
pub fn lookup(gpu: &Gpu, w: &WeightSet, name: &str, ids: &[Vec<u32>]) -> Result<Tensor> {
    let t = w.get(name)?;
    let [vocab, d] = *t.shape else {
        return input(format!(
            "tensor '{name}' in {} has shape {:?}, expected [vocab, width]",
            t.path.display(),
            t.shape
        ));
    };
    let row_bytes = d * t.dtype.size();
    let mut data = Vec::with_capacity(ids.iter().map(Vec::len).sum::<usize>() * d);
    for &id in ids.iter().flatten() {
        let id = id as usize;
        if id >= vocab {
            return input(format!(
                "token id {id} is outside the embedding table '{name}' of {vocab} rows in {} \
                 (the tokenizer's vocabulary is larger than the encoder's)",
                t.path.display()
            ));
        }
        data.extend(
            t.dtype
                .to_f32(&t.bytes[id * row_bytes..(id + 1) * row_bytes]),
        );
    }
    let rows = data.len() / d.max(1);
    Ok(Tensor::from_f32(gpu, &[rows, d], &data)?)
}
