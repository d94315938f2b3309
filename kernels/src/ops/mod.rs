//! The ops: one file per family. Each op checks its operands (errors, never panics), splits
//! work that exceeds a device binding limit where it can, and records one or more dispatches.

use std::ops::Range;

use crate::context::Gpu;
use crate::error::{KernelError, Result};
use crate::tensor::{DType, Tensor};

pub mod activation;
pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod embed;
pub mod euler;
pub mod layout;
pub mod matmul;
pub mod modulate;
pub mod norm;
pub(crate) mod pack;
pub mod reduce;
pub mod resample;
pub mod rope;
pub mod softmax;

pub use activation::Act;

/// Workgroup width of the flat element-wise kernels (see `flat_index` in common.wgsl).
pub(crate) const FLAT_WG: u32 = 256;

/// Workgroups for `n` invocations of a flat kernel, folded into 2D past the per-dimension limit.
pub(crate) fn grid_flat(gpu: &Gpu, n: usize) -> [u32; 3] {
    let groups = n.div_ceil(FLAT_WG as usize).max(1);
    let max_x = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let x = groups.min(max_x);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

/// Workgroup size of the kernels that reduce over a workgroup (workgroup_sum.wgsl,
/// welford.wgsl). On software adapters one SIMD row of llvmpipe (8 lanes): every barrier there
/// switches between the workgroup's 8-lane slices, and with 256 invocations the barriers cost
/// more than the arithmetic (LayerNorm over 4429 x 1536 on lavapipe: 320 ms at 256, 138 ms at
/// 8).
pub(crate) fn reduction_width(gpu: &Gpu) -> u32 {
    if gpu.caps.software { 8 } else { 256 }
}

/// The element snippet of the row and flat kernels and its width in floats: vec4 when a row
/// (or a flat tensor) and the modulation row it reads are whole vec4s, else scalar.
pub(crate) fn elem_width(d: usize, mod_stride: usize) -> (&'static str, usize) {
    if d.is_multiple_of(4) && mod_stride.is_multiple_of(4) {
        ("elem_vec4.wgsl", 4)
    } else {
        ("elem_f32.wgsl", 1)
    }
}

/// The dtype snippet that gives a kernel its `w_vec4`/`w_at` weight accessors.
pub(crate) fn weight_snippet(gpu: &Gpu, dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "dtype_f32.wgsl",
        DType::F16 if gpu.caps.f16 => "dtype_f16_native.wgsl",
        DType::F16 => "dtype_f16.wgsl",
        DType::BF16 => "dtype_bf16.wgsl",
    }
}

/// The subgroup kernels (`kernel` names one) broadcast between exactly 8 lanes: refuse
/// adapters whose subgroups are not 8 wide.
pub(crate) fn expect_subgroups_of_8(gpu: &Gpu, kernel: &str) -> Result<()> {
    match gpu.caps.subgroup_width {
        Some(8) => Ok(()),
        width => Err(KernelError::Device(format!(
            "the subgroup {kernel} needs subgroups 8 wide; {} has {}",
            gpu.adapter.label(),
            width.map_or_else(
                || "no subgroups of one fixed width".to_string(),
                |w| format!("subgroups {w} wide")
            )
        ))),
    }
}

/// Activations are f32: refuse anything else with the op's name.
pub(crate) fn expect_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(KernelError::DType {
            op,
            message: format!("{what} must be f32, got {}", t.dtype()),
        });
    }
    Ok(())
}

/// Split `total` items into ranges such that, for every operand i, the range's
/// `item_bytes[i]`-sized items fit `limit`, with every range start at a multiple of `align`
/// bytes in every operand (the device's storage offset alignment).
pub(crate) fn chunks(
    what: &str,
    total: usize,
    item_bytes: &[u64],
    limit: u64,
    align: u64,
) -> Result<Vec<Range<usize>>> {
    chunks_max(what, total, item_bytes, limit, align, usize::MAX)
}

/// [`chunks`] with at most `max_items` per range as well (texture heights).
pub(crate) fn chunks_max(
    what: &str,
    total: usize,
    item_bytes: &[u64],
    limit: u64,
    align: u64,
    max_items: usize,
) -> Result<Vec<Range<usize>>> {
    if total == 0 {
        return Ok(Vec::new());
    }
    let largest = item_bytes.iter().copied().max().unwrap_or(1).max(1);
    if total as u64 * largest <= limit && total <= max_items {
        return Ok(std::iter::once(0..total).collect());
    }
    // Items per aligned step: the smallest count whose bytes are a multiple of `align` in
    // every operand.
    let step = item_bytes.iter().fold(1usize, |acc, &b| {
        lcm(acc, (align / gcd(align, b.max(1))) as usize)
    });
    let per = (((limit / largest) as usize).min(max_items) / step) * step;
    if per == 0 {
        return Err(KernelError::TooLarge {
            what: what.to_string(),
            bytes: step as u64 * largest,
            limit,
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    Ok((0..total)
        .step_by(per)
        .map(|s| s..(s + per).min(total))
        .collect())
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a as u64, b as u64) as usize * b
}

/// Element ranges of a flat op (elements of `elem_bytes`) whose every binding fits the
/// device limit.
pub(crate) fn flat_chunks(
    gpu: &Gpu,
    what: &str,
    n: usize,
    elem_bytes: u64,
) -> Result<Vec<Range<usize>>> {
    chunks(
        what,
        n,
        &[elem_bytes],
        gpu.max_binding(),
        u64::from(gpu.limits.min_storage_buffer_offset_alignment),
    )
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Uniform parameters: u32 words (f32 values go in as their bits).
pub(crate) fn words(values: &[u32]) -> &[u8] {
    bytemuck::cast_slice(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_limit_and_alignment() {
        let r = chunks("x", 1000, &[12], 4096, 256).unwrap();
        assert_eq!(r.first().unwrap().start, 0);
        assert_eq!(r.last().unwrap().end, 1000);
        for c in &r {
            assert!((c.len() as u64) * 12 <= 4096);
            assert_eq!((c.start as u64 * 12) % 256, 0);
        }
        for w in r.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(chunks("x", 10, &[5000], 4096, 256).is_err());
        assert_eq!(chunks("x", 10, &[4], 4096, 256).unwrap(), vec![0..10]);
        // Two operands: starts aligned in both (272- and 116-byte rows).
        for c in chunks("x", 500, &[272, 116], 32768, 256).unwrap() {
            assert_eq!((c.start as u64 * 272) % 256, 0);
            assert_eq!((c.start as u64 * 116) % 256, 0);
            assert!(c.len() as u64 * 272 <= 32768);
        }
        assert!(
            chunks_max("x", 100, &[4], 1 << 20, 4, 30)
                .unwrap()
                .iter()
                .all(|c| c.len() <= 30)
        );
    }
}
