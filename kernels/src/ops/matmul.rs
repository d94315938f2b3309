//! Linear layer y = act(x W^T + b) in the nn.Linear layout: x [.., K] f32, W [N, K] in f32, f16
//! or bf16 (widened in the shader), b [N] f32, with the activation fused into the epilogue.
//!
//! Variants, chosen per adapter and shape:
//! - `linear_texture` on software adapters: operands are read through textures, which Mesa's
//!   llvmpipe fetches vectorised while it scalarises buffer loads;
//! - `linear` (buffer, register-blocked) elsewhere;
//! - `linear_scalar` when K is not a multiple of 4.

use crate::context::Gpu;
use crate::error::{KernelError, Result};
use crate::ops::{Act, chunks, expect_f32, weight_snippet, words};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// Rows and columns each invocation of `linear.wgsl` owns (its TM, TN) times its workgroup size.
const TILE_M: usize = 8 * 8;
const TILE_N: usize = 8 * 8;

/// y = act(x W^T + b).
pub fn linear(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act) -> Result<Tensor> {
    let (n, _) = check(x, w, bias)?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("checked rank") = n;
    let y = Tensor::empty(gpu, &shape, x.dtype())?;
    linear_into(gpu, x, w, bias, act, &y)?;
    Ok(y)
}

/// Validate operands; returns (N, K).
fn check(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<(usize, usize)> {
    const OP: &str = "linear";
    expect_f32(OP, "input", x)?;
    if w.shape().len() != 2 {
        return Err(KernelError::Shape { op: OP, message: format!("weight must be [N, K], got {:?}", w.shape()) });
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    if x.shape().is_empty() || x.cols() != k {
        return Err(KernelError::Shape {
            op: OP,
            message: format!("input {:?} does not end in K = {k} of weight {:?}", x.shape(), w.shape()),
        });
    }
    if let Some(b) = bias {
        expect_f32(OP, "bias", b)?;
        if b.shape() != [n] {
            return Err(KernelError::Shape { op: OP, message: format!("bias {:?} must be [{n}]", b.shape()) });
        }
    }
    Ok((n, k))
}

/// y = act(x W^T + b) into an existing [.., N] tensor.
pub fn linear_into(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act, y: &Tensor) -> Result<()> {
    let (n, k) = check(x, w, bias)?;
    let m = x.rows();
    if y.numel() != m * n || y.cols() != n {
        return Err(KernelError::Shape { op: "linear", message: format!("output {:?} must be [{m}, {n}]", y.shape()) });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment);
    let limit = gpu.max_binding();
    let wsize = w.dtype().size() as u64;
    // Row chunks bound x and y; column chunks bound W. Both fit the binding limit.
    let x_item = (k as u64 * 4).max(n as u64 * 4);
    let row_chunks = chunks("linear input/output rows", m, x_item, limit, align)?;
    let col_chunks = chunks("linear weight rows", n, k as u64 * wsize, limit, align)?;
    let vec4 = k % 4 == 0;
    let kernel = if vec4 {
        let name = match w.dtype() {
            DType::F32 => "linear_f32",
            DType::F16 => "linear_f16",
            DType::BF16 => "linear_bf16",
        };
        Kernel::new(name, &[weight_snippet(gpu, w.dtype()), "common.wgsl", "linear.wgsl"]).trusted()
    } else {
        Kernel::new("linear_scalar", &[weight_snippet(gpu, w.dtype()), "common.wgsl", "linear_scalar.wgsl"])
    };
    for rows in &row_chunks {
        for cols in &col_chunks {
            let (mc, nc) = (rows.len(), cols.len());
            let x_bind = x.bind_range("x", rows.start as u64 * k as u64 * 4, (mc * k * 4) as u64);
            let w_bind = w.bind_range("weight", cols.start as u64 * k as u64 * wsize, nc as u64 * k as u64 * wsize);
            let y_bind = y.bind_range("y", rows.start as u64 * n as u64 * 4, (mc * n * 4) as u64);
            let b_bind = match bias {
                Some(b) => b.bind("bias"),
                None => x.bind_range("x", 0, 4),
            };
            let kdim = if vec4 { k / 4 } else { k };
            let params = [mc as u32, nc as u32, kdim as u32, n as u32, cols.start as u32, bias.is_some() as u32, act as u32];
            let groups = if vec4 {
                [nc.div_ceil(TILE_N) as u32, mc.div_ceil(TILE_M) as u32, 1]
            } else {
                [nc.div_ceil(16) as u32, mc.div_ceil(16) as u32, 1]
            };
            let cost = Cost::new(
                2.0 * (mc * nc * k) as f64,
                (mc * k * 4 + nc * k * w.dtype().size() + mc * nc * 4) as f64,
            );
            gpu.dispatch(&kernel, words(&params), &[x_bind, w_bind, b_bind, y_bind], groups, cost)?;
        }
    }
    Ok(())
}
