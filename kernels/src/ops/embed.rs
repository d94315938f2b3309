//! Sinusoidal timestep embedding. Computed on the host in f64, one row per batch entry, and
//! uploaded: its arguments reach 1000 (3500 for FLUX guidance), where WGSL sin/cos are far
//! from accurate and even f32 on the CPU loses about 1e-6 relative.

use crate::context::Gpu;
use crate::error::Result;
use crate::tensor::Tensor;

/// Rows [cos(t f_0) .. cos(t f_{h-1}), sin(t f_0) .. sin(t f_{h-1})] with h = dim/2 and
/// f_i = exp(-ln(max_period) i / h) (diffusers' flip_sin_to_cos=True, downscale_freq_shift=0).
pub fn timestep_features(t: &[f64], dim: usize, max_period: f64) -> Vec<f32> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(t.len() * dim);
    for &tv in t {
        let args: Vec<f64> = (0..half)
            .map(|i| tv * (-(max_period.ln()) * i as f64 / half as f64).exp())
            .collect();
        out.extend(args.iter().map(|a| a.cos() as f32));
        out.extend(args.iter().map(|a| a.sin() as f32));
        out.extend(std::iter::repeat_n(0.0, dim - 2 * half));
    }
    out
}

/// The embedding of every t as a [len(t), dim] tensor.
pub fn timestep_embedding(gpu: &Gpu, t: &[f64], dim: usize) -> Result<Tensor> {
    Tensor::from_f32(gpu, &[t.len(), dim], &timestep_features(t, dim, 10000.0))
}
