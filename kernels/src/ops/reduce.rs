//! Deterministic squared-error reduction per group of rows (the calibration losses).

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::{elem_width, expect_f32, reduction_width, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// out[g] = sum over the `group_rows` rows of group g of (a[r] - b[r mod rows_b])^2, where a is
/// [R, C] (leading dims flattened) and b is [rows_b, C]: one shared target per sample serves
/// every candidate. R must be a multiple of group_rows and of rows_b.
pub fn squared_error_groups(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    group_rows: usize,
) -> Result<Tensor> {
    const OP: &str = "squared_error";
    expect_f32(OP, "a", a)?;
    expect_f32(OP, "b", b)?;
    let rows = *a.shape().first().unwrap_or(&0);
    let rows_b = *b.shape().first().unwrap_or(&0);
    let cols = a.numel().checked_div(rows).unwrap_or(0);
    if rows == 0 || rows_b == 0 || b.numel() != rows_b * cols {
        return shape_err(
            OP,
            format!(
                "a {:?} and b {:?} must share their trailing dims",
                a.shape(),
                b.shape()
            ),
        );
    }
    if group_rows == 0 || !rows.is_multiple_of(group_rows) || !rows.is_multiple_of(rows_b) {
        return shape_err(
            OP,
            format!("{rows} rows do not split into groups of {group_rows} and repeats of {rows_b}"),
        );
    }
    let groups = rows / group_rows;
    let out = Tensor::empty(gpu, &[groups], DType::F32)?;
    let max_x = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let n = a.numel() as f64;
    let (snippet, w) = elem_width(cols, 0);
    gpu.dispatch(
        &Kernel::new(
            OP,
            &[
                "common.wgsl",
                snippet,
                "workgroup_sum.wgsl",
                "squared_error.wgsl",
            ],
        )
        .define("WG", reduction_width(gpu)),
        words(&[
            group_rows as u32,
            (cols / w) as u32,
            rows_b as u32,
            groups as u32,
        ]),
        &[a.bind("a"), b.bind("b"), out.bind("out")],
        [groups.min(max_x) as u32, groups.div_ceil(max_x) as u32, 1],
        Cost::new(3.0 * n, 8.0 * n),
    )?;
    Ok(out)
}
