//! Layout changes: patchify/unpatchify (SD3 patches, FLUX 2x2 packing), concat/split along
//! tokens, and cropping rows laid out on a grid (the stored position embedding).

use crate::context::Gpu;
use crate::error::{Result, shape_err};
use crate::ops::{expect_f32, grid_flat, weight_snippet, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// Feature order inside a patch token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchOrder {
    /// (c, ph, pw), pw fastest: conv-weight order (SD3 patch embed) and FLUX packing.
    ChannelFirst,
    /// (ph, pw, c), c fastest: SD3's final layer output.
    ChannelLast,
}

/// The kernel, parameters and grid that move [B, C, H, W] to or from patch tokens: for 2x2
/// patches with channels and width multiples of 4, four channels and four columns at a time
/// (patchify_vec4.wgsl), else one float per invocation (patchify.wgsl).
fn patch_dispatch(
    gpu: &Gpu,
    unpatch: bool,
    order: PatchOrder,
    [b, c, h, w]: [usize; 4],
    patch: usize,
) -> (Kernel, Vec<u32>, [u32; 3]) {
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let vec4 = patch == 2 && c.is_multiple_of(4) && w.is_multiple_of(4) && b * c / 4 <= max;
    let parts: &[&'static str] = if vec4 {
        &["patchify_vec4.wgsl"]
    } else {
        &["common.wgsl", "patchify.wgsl"]
    };
    let kernel = Kernel::new(if unpatch { "unpatchify" } else { "patchify" }, parts)
        .constant("UNPATCH", unpatch as u32)
        .constant("CHANNEL_LAST", (order == PatchOrder::ChannelLast) as u32);
    if vec4 {
        let grid = [
            (w / 4).div_ceil(8) as u32,
            (h / 2).div_ceil(8) as u32,
            (b * c / 4) as u32,
        ];
        (kernel, vec![(c / 4) as u32, h as u32, w as u32], grid)
    } else {
        let n = b * c * h * w;
        let params = vec![n as u32, c as u32, h as u32, w as u32, patch as u32];
        (kernel, params, grid_flat(gpu, n))
    }
}

fn check_grid(op: &'static str, c: usize, h: usize, w: usize, patch: usize) -> Result<()> {
    if patch == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) || c == 0 {
        return shape_err(
            op,
            format!("{h}x{w} is not a whole number of {patch}x{patch} patches"),
        );
    }
    Ok(())
}

/// [B, C, H, W] -> [B, (H/p)(W/p), p*p*C], patches in row-major order.
pub fn patchify(gpu: &Gpu, x: &Tensor, patch: usize, order: PatchOrder) -> Result<Tensor> {
    const OP: &str = "patchify";
    expect_f32(OP, "input", x)?;
    let [b, c, h, w] = *x.shape() else {
        return shape_err(
            OP,
            format!("input must be [B, C, H, W], got {:?}", x.shape()),
        );
    };
    check_grid(OP, c, h, w, patch)?;
    let y = Tensor::empty(
        gpu,
        &[b, (h / patch) * (w / patch), patch * patch * c],
        DType::F32,
    )?;
    let n = x.numel();
    let (kernel, params, grid) = patch_dispatch(gpu, false, order, [b, c, h, w], patch);
    gpu.dispatch(
        &kernel,
        words(&params),
        &[x.bind("x"), y.bind("y")],
        grid,
        Cost::new(0.0, 8.0 * n as f64),
    )?;
    Ok(y)
}

/// Tokens [B, (H/p)(W/p), p*p*C] -> [B, C, H, W].
pub fn unpatchify(
    gpu: &Gpu,
    t: &Tensor,
    c: usize,
    h: usize,
    w: usize,
    patch: usize,
    order: PatchOrder,
) -> Result<Tensor> {
    const OP: &str = "unpatchify";
    expect_f32(OP, "tokens", t)?;
    check_grid(OP, c, h, w, patch)?;
    let tokens = (h / patch) * (w / patch);
    let [b, l, f] = *t.shape() else {
        return shape_err(OP, format!("tokens must be [B, L, F], got {:?}", t.shape()));
    };
    if l != tokens || f != patch * patch * c {
        return shape_err(
            OP,
            format!(
                "tokens {:?} do not match {c} channels of {h}x{w} in {patch}x{patch} patches",
                t.shape()
            ),
        );
    }
    let y = Tensor::empty(gpu, &[b, c, h, w], DType::F32)?;
    let n = y.numel();
    let (kernel, params, grid) = patch_dispatch(gpu, true, order, [b, c, h, w], patch);
    gpu.dispatch(
        &kernel,
        words(&params),
        &[t.bind("tokens"), y.bind("y")],
        grid,
        Cost::new(0.0, 8.0 * n as f64),
    )?;
    Ok(y)
}

fn concat_kernel(split: bool) -> Kernel {
    Kernel::new(
        if split { "split" } else { "concat" },
        &["common.wgsl", "concat.wgsl"],
    )
    .constant("SPLIT", split as u32)
}

/// [B, L1, D] and [B, L2, D] -> [B, L1 + L2, D].
pub fn concat_tokens(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "concat";
    expect_f32(OP, "a", a)?;
    expect_f32(OP, "b", b)?;
    let (&[ba, l1, d], &[bb, l2, db]) = (a.shape(), b.shape()) else {
        return shape_err(
            OP,
            format!(
                "inputs must be [B, L, D], got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        );
    };
    if ba != bb || d != db {
        return shape_err(
            OP,
            format!(
                "{:?} and {:?} differ in batch or width",
                a.shape(),
                b.shape()
            ),
        );
    }
    let out = Tensor::empty(gpu, &[ba, l1 + l2, d], DType::F32)?;
    let n = out.numel();
    gpu.dispatch(
        &concat_kernel(false),
        words(&[n as u32, l1 as u32, l2 as u32, d as u32]),
        &[a.bind("a"), b.bind("b"), out.bind("out")],
        grid_flat(gpu, n),
        Cost::new(0.0, 8.0 * n as f64),
    )?;
    Ok(out)
}

/// [B, L1 + L2, D] -> ([B, L1, D], [B, L2, D]).
pub fn split_tokens(gpu: &Gpu, x: &Tensor, l1: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "split";
    expect_f32(OP, "input", x)?;
    let [b, l, d] = *x.shape() else {
        return shape_err(OP, format!("input must be [B, L, D], got {:?}", x.shape()));
    };
    if l1 > l {
        return shape_err(OP, format!("cannot take {l1} tokens of {l}"));
    }
    let first = Tensor::empty(gpu, &[b, l1, d], DType::F32)?;
    let second = Tensor::empty(gpu, &[b, l - l1, d], DType::F32)?;
    let n = x.numel();
    gpu.dispatch(
        &concat_kernel(true),
        words(&[n as u32, l1 as u32, (l - l1) as u32, d as u32]),
        &[first.bind("first"), second.bind("second"), x.bind("x")],
        grid_flat(gpu, n),
        Cost::new(0.0, 8.0 * n as f64),
    )?;
    Ok((first, second))
}

/// Rows of `src` [.., grid*grid, D] (row-major on a grid x grid square, any stored dtype)
/// cropped to the h x w window at (top, left), as f32 [h*w, D]. Only the rows the window spans
/// are bound, so a position table larger than one binding still works.
pub fn crop_grid(
    gpu: &Gpu,
    src: &Tensor,
    grid: usize,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
) -> Result<Tensor> {
    const OP: &str = "crop_grid";
    let d = src.cols();
    if src.rows() != grid * grid || top + h > grid || left + w > grid || h == 0 || w == 0 {
        return shape_err(
            OP,
            format!(
                "{h}x{w} at ({top}, {left}) does not fit a {grid}x{grid} grid of {:?}",
                src.shape()
            ),
        );
    }
    let out = Tensor::empty(gpu, &[h * w, d], DType::F32)?;
    let n = out.numel();
    let esize = src.dtype().size() as u64;
    let first_elem = ((top * grid + left) * d) as u64;
    let last_elem = (((top + h - 1) * grid + left + w) * d) as u64;
    let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment);
    let start = (first_elem * esize) / align * align;
    let size = (last_elem * esize - start).next_multiple_of(16);
    let bind = src.bind_range(
        "position table",
        start,
        size.min(src.byte_len().next_multiple_of(16) - start),
    );
    gpu.dispatch(
        &Kernel::new(
            OP,
            &[
                weight_snippet(gpu, src.dtype()),
                "common.wgsl",
                "crop_grid.wgsl",
            ],
        ),
        words(&[
            n as u32,
            d as u32,
            grid as u32,
            w as u32,
            (first_elem - start / esize) as u32,
        ]),
        &[bind, out.bind("out")],
        grid_flat(gpu, n),
        Cost::new(0.0, (4 + esize as usize) as f64 * n as f64),
    )?;
    Ok(out)
}

/// Stack a [B1, ...] and b [B2, ...] along the first dimension (two buffer copies).
pub fn concat_batch(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "concat_batch";
    expect_f32(OP, "a", a)?;
    expect_f32(OP, "b", b)?;
    if a.shape().is_empty() || a.shape()[1..] != b.shape()[1..] {
        return shape_err(
            OP,
            format!(
                "{:?} and {:?} differ beyond the batch dimension",
                a.shape(),
                b.shape()
            ),
        );
    }
    let mut shape = a.shape().to_vec();
    shape[0] += b.shape()[0];
    let out = Tensor::empty(gpu, &shape, DType::F32)?;
    let a_bytes = (a.numel() * 4) as u64;
    gpu.copy(a.buffer(), 0, out.buffer(), 0, a_bytes);
    gpu.copy(b.buffer(), 0, out.buffer(), a_bytes, (b.numel() * 4) as u64);
    Ok(out)
}

/// Rows `indices` of the first dimension of x (repeats allowed), by buffer copies.
pub fn gather_batch(gpu: &Gpu, x: &Tensor, indices: &[usize]) -> Result<Tensor> {
    const OP: &str = "gather_batch";
    expect_f32(OP, "input", x)?;
    let Some(&rows) = x.shape().first() else {
        return shape_err(OP, "a scalar has no rows");
    };
    if let Some(bad) = indices.iter().find(|&&i| i >= rows) {
        return shape_err(OP, format!("row {bad} of a batch of {rows}"));
    }
    let mut shape = x.shape().to_vec();
    shape[0] = indices.len();
    let out = Tensor::empty(gpu, &shape, DType::F32)?;
    let row_bytes = (x.numel() / rows * 4) as u64;
    for (dst, &src) in indices.iter().enumerate() {
        gpu.copy(
            x.buffer(),
            src as u64 * row_bytes,
            out.buffer(),
            dst as u64 * row_bytes,
            row_bytes,
        );
    }
    Ok(out)
}

/// [B, R, C] -> [B, C, R]: NCHW planes ([B, C, H*W]) to token rows ([B, H*W, C]) and back.
pub fn transpose(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "transpose";
    expect_f32(OP, "input", x)?;
    let [b, r, c] = *x.shape() else {
        return shape_err(OP, format!("input must be [B, R, C], got {:?}", x.shape()));
    };
    let y = Tensor::empty(gpu, &[b, c, r], DType::F32)?;
    let n = x.numel();
    gpu.dispatch(
        &Kernel::new(OP, &["common.wgsl", "transpose.wgsl"]),
        words(&[n as u32, r as u32, c as u32]),
        &[x.bind("x"), y.bind("y")],
        grid_flat(gpu, n),
        Cost::new(0.0, 8.0 * n as f64),
    )?;
    Ok(y)
}

/// Rows `range` of the first dimension of x, copied into a new tensor (one buffer copy).
pub fn take_rows(gpu: &Gpu, x: &Tensor, range: std::ops::Range<usize>) -> Result<Tensor> {
    const OP: &str = "take_rows";
    expect_f32(OP, "input", x)?;
    let rows = x.shape().first().copied().unwrap_or(0);
    if range.start > range.end || range.end > rows {
        return shape_err(OP, format!("rows {range:?} of {:?}", x.shape()));
    }
    let row_bytes = (x.numel() / rows.max(1) * 4) as u64;
    let mut shape = x.shape().to_vec();
    shape[0] = range.len();
    let out = Tensor::empty(gpu, &shape, DType::F32)?;
    if !range.is_empty() {
        gpu.copy(
            x.buffer(),
            range.start as u64 * row_bytes,
            out.buffer(),
            0,
            range.len() as u64 * row_bytes,
        );
    }
    Ok(out)
}

/// Copy all rows of `src` into `dst` from row `first` on (rows of the first dimension, same
/// trailing dims): the inverse of [`take_rows`].
pub fn put_rows(gpu: &Gpu, dst: &Tensor, first: usize, src: &Tensor) -> Result<()> {
    const OP: &str = "put_rows";
    expect_f32(OP, "destination", dst)?;
    expect_f32(OP, "source", src)?;
    let (Some(&rows), Some(&n)) = (dst.shape().first(), src.shape().first()) else {
        return shape_err(OP, "scalars have no rows");
    };
    if dst.shape()[1..] != src.shape()[1..] || first + n > rows {
        return shape_err(
            OP,
            format!(
                "{:?} does not fit into {:?} at row {first}",
                src.shape(),
                dst.shape()
            ),
        );
    }
    let row_bytes = (dst.numel() / rows.max(1) * 4) as u64;
    if n > 0 {
        gpu.copy(
            src.buffer(),
            0,
            dst.buffer(),
            first as u64 * row_bytes,
            n as u64 * row_bytes,
        );
    }
    Ok(())
}
