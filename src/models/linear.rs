//! A linear layer's uploaded weights: the matrix in its stored dtype (laid out for the
//! adapter), the bias widened to f32.

use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Matrix, MatrixLayout, Tensor};

use crate::error::Result;
use crate::weights::{TensorRef, WeightSet};

pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `name.weight` [out, in] (checked) and `name.bias` [out] when present.
    pub fn load(gpu: &Gpu, w: &WeightSet, name: &str, out: usize, inp: usize) -> Result<Linear> {
        Linear::load_fused(gpu, w, &[name], &[out], inp)
    }

    /// A layer whose weight is stored under another shape with `out` rows (a patch-embedding
    /// conv [D, C, p, p] used as [D, C*p*p] on patchified tokens).
    pub fn load_reshaped(
        gpu: &Gpu,
        w: &WeightSet,
        name: &str,
        shape: &[usize],
        out: usize,
    ) -> Result<Linear> {
        let t = w.get_shaped(&format!("{name}.weight"), shape)?;
        let inp = shape.iter().product::<usize>() / out;
        let weight = upload(gpu, &t, out, inp, &[t.bytes])?;
        let bias = if w.contains(&format!("{name}.bias")) {
            Some(load_vector(gpu, w, &format!("{name}.bias"), out)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Several layers with the same input stacked into one matrix (q, k, v -> qkv): each part's
    /// rows are written straight into place, so there is still a single upload per weight.
    pub fn load_fused(
        gpu: &Gpu,
        w: &WeightSet,
        names: &[&str],
        outs: &[usize],
        inp: usize,
    ) -> Result<Linear> {
        let weights = names
            .iter()
            .zip(outs)
            .map(|(n, &o)| w.get_shaped(&format!("{n}.weight"), &[o, inp]))
            .collect::<Result<Vec<_>>>()?;
        let dtype = weights[0].dtype;
        if let Some(odd) = weights.iter().find(|t| t.dtype != dtype) {
            return crate::error::input(format!(
                "tensor '{}' is {} while '{}' is {dtype}",
                odd.name, odd.dtype, weights[0].name
            ));
        }
        let total: usize = outs.iter().sum();
        let parts: Vec<&[u8]> = weights.iter().map(|t| t.bytes).collect();
        let weight = upload(gpu, &weights[0], total, inp, &parts)?;
        let bias = if w.contains(&format!("{}.bias", names[0])) {
            let biases = names
                .iter()
                .zip(outs)
                .map(|(n, &o)| w.get_shaped(&format!("{n}.bias"), &[o]))
                .collect::<Result<Vec<_>>>()?;
            let parts: Vec<&[u8]> = biases.iter().map(|t| t.bytes).collect();
            let raw = Tensor::from_raw_parts(gpu, &[total], biases[0].dtype, &parts)?;
            Some(ops::elementwise::to_f32(gpu, &raw)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Rows `rows` of a layer stored as `name.weight` [total, in] (FLUX's fused linear1 holds
    /// q, k, v and the MLP's input projection): uploaded as a layer of its own.
    pub fn load_rows(
        gpu: &Gpu,
        w: &WeightSet,
        name: &str,
        rows: std::ops::Range<usize>,
        total: usize,
        inp: usize,
    ) -> Result<Linear> {
        let t = w.get_shaped(&format!("{name}.weight"), &[total, inp])?;
        let es = t.dtype.size();
        let part = &t.bytes[rows.start * inp * es..rows.end * inp * es];
        let weight = upload(gpu, &t, rows.len(), inp, &[part])?;
        let bias_name = format!("{name}.bias");
        let bias = if w.contains(&bias_name) {
            let b = w.get_shaped(&bias_name, &[total])?;
            let es = b.dtype.size();
            let part = &b.bytes[rows.start * es..rows.end * es];
            let raw = Tensor::from_raw_parts(gpu, &[rows.len()], b.dtype, &[part])?;
            Some(ops::elementwise::to_f32(gpu, &raw)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor, act: Act) -> Result<Tensor> {
        Ok(ops::matmul::linear(
            gpu,
            x,
            &self.weight,
            self.bias.as_ref(),
            act,
        )?)
    }
}

/// `parts` (rows of `t`'s dtype, stacked) as an out x inp matrix; errors name `t`.
fn upload(gpu: &Gpu, t: &TensorRef<'_>, out: usize, inp: usize, parts: &[&[u8]]) -> Result<Matrix> {
    Matrix::upload(gpu, out, inp, t.dtype, parts, MatrixLayout::Auto).map_err(|e| {
        crate::error::Error::Input(format!("tensor '{}' in {}: {e}", t.name, t.path.display()))
    })
}

/// A vector weight (norm scale) uploaded in its stored dtype and widened to f32 on the device.
pub fn load_vector(gpu: &Gpu, w: &WeightSet, name: &str, len: usize) -> Result<Tensor> {
    let raw = w.get_shaped(name, &[len])?.upload(gpu)?;
    Ok(ops::elementwise::to_f32(gpu, &raw)?)
}
