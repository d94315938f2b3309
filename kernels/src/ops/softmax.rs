//! Row softmax in place (attention weights computed from matmuls, as the VAE's single-head
//! attention over every pixel does with head dims past the fused kernel's).

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::{chunks, expect_f32, reduction_width, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::Tensor;

/// x[r, :] = softmax(scale * x[r, :]) for every row of x [.., C], in place.
pub fn softmax_rows(gpu: &Gpu, x: &Tensor, scale: f32) -> Result<()> {
    const OP: &str = "softmax";
    expect_f32(OP, "input", x)?;
    let (rows, cols) = (x.rows(), x.cols());
    if cols == 0 {
        return shape_err(OP, format!("rows of {:?} are empty", x.shape()));
    }
    let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment);
    let row_bytes = cols as u64 * 4;
    let max_x = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let kernel = Kernel::new(OP, &["softmax.wgsl"]).define("WG", reduction_width(gpu));
    // Rows in ranges whose binding fits the device; each range from its aligned first row.
    for range in chunks(OP, rows, &[row_bytes], gpu.max_binding(), align)? {
        let n = range.len();
        let bind = x.bind_range("x", range.start as u64 * row_bytes, n as u64 * row_bytes);
        let work = (n * cols) as f64;
        gpu.dispatch(
            &kernel,
            words(&[n as u32, cols as u32, scale.to_bits()]),
            &[bind],
            [n.min(max_x) as u32, n.div_ceil(max_x) as u32, 1],
            Cost::new(6.0 * work, 12.0 * work),
        )?;
    }
    Ok(())
}
