//! Linear layer y = act(x W^T + b) in the nn.Linear layout: x [.., K] f32, W a [`Matrix`]
//! [N, K] in f32, f16 or bf16 (widened in the shader), b [N] f32, with the activation fused
//! into the epilogue.
//!
//! Variants, chosen by the matrix's layout and K:
//! - texture matrices (software adapters), by [`TextureLinear`] (a [`Variant`]): x is
//!   packed into a texture and both operands are read with `textureLoad`, which llvmpipe
//!   vectorises; `linear_texture_subgroup` where subgroups are 8 wide, else `linear_texture`,
//!   each in its `_k8` form (eight k per loop step) when K is a multiple of 8;
//! - buffer matrices elsewhere, by [`BufferLinear`] (a [`Variant`]): `linear_tiled`
//!   or `linear_tiled_wide` by size (operands staged in workgroup memory) on hardware GPUs,
//!   `linear` (register-blocked, operands straight from the buffers) on software adapters,
//!   `linear_coop` (cooperative matrices, f16 operands) where asked for;
//! - `linear_scalar` when K is not a multiple of 4.

use serde::Serialize;

use crate::caps::{Caps, Variant};
use crate::context::{Bind, Gpu};
use crate::error::{KernelError, Result};
use crate::matrix::{Matrix, Store};
use crate::ops::pack::rows_texture;
use crate::ops::{
    Act, chunks, chunks_max, expect_f32, expect_subgroups_of_8, weight_snippet, words,
};
use crate::pipelines::Kernel;
use crate::profile::Cost;
use crate::tensor::{DType, Tensor};

/// Rows and columns each workgroup of `linear.wgsl` covers (TM x 8 by TN x 8).
const TILE_M: usize = 8 * 8;
const TILE_N: usize = 8 * 8;

/// y = act(x W^T + b).
pub fn linear(
    gpu: &Gpu,
    x: &Tensor,
    w: &Matrix,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    check(x, w, bias)?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("checked rank") = w.rows();
    let y = Tensor::empty(gpu, &shape, DType::F32)?;
    linear_into(gpu, x, w, bias, act, &y)?;
    Ok(y)
}

fn check(x: &Tensor, w: &Matrix, bias: Option<&Tensor>) -> Result<()> {
    const OP: &str = "linear";
    expect_f32(OP, "input", x)?;
    let (n, k) = (w.rows(), w.cols());
    if x.shape().is_empty() || x.cols() != k {
        return Err(KernelError::Shape {
            op: OP,
            message: format!(
                "input {:?} does not end in K = {k} of weight [{n}, {k}]",
                x.shape()
            ),
        });
    }
    if let Some(b) = bias {
        expect_f32(OP, "bias", b)?;
        if b.shape() != [n] {
            return Err(KernelError::Shape {
                op: OP,
                message: format!("bias {:?} must be [{n}]", b.shape()),
            });
        }
    }
    Ok(())
}

/// Kernels for weights in a storage buffer (K a multiple of 4; other K take the scalar kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BufferLinear {
    /// linear.wgsl: 8 x 8 outputs per invocation, operands straight from the buffers.
    Blocked,
    /// linear_tiled.wgsl: 64 x 64 per workgroup from operands staged in workgroup memory.
    Tiled,
    /// linear_tiled_wide.wgsl: 128 x 128 per workgroup, 8 x 8 per invocation, the next
    /// step's operands fetched while the staged ones are used.
    Wide,
    /// linear_coop.wgsl: cooperative matrices (tensor cores) on operands rounded to f16, 64 x 64
    /// per workgroup; needs `Caps::coop_f16`. Never a default: its error is f16's, not f32's.
    Coop,
    /// `Wide` for products whose 128 x 128 blocks fill a GPU (at least `WIDE_MIN_GROUPS`),
    /// else `Tiled`, whose four times as many workgroups keep more of it busy: on an H200,
    /// `Wide` for every product made the 128 px SD3 forward (333-row text stream, adaLN rows)
    /// 1.8x slower (BENCHMARKS.md). The default on hardware GPUs.
    Auto,
}

/// Workgroups of 128 x 128 from which `BufferLinear::Auto` takes the wide kernel: about two
/// per streaming multiprocessor of an H100/H200 (132).
const WIDE_MIN_GROUPS: usize = 256;

impl Variant for BufferLinear {
    /// Shared memory is what hardware GPUs feed their ALUs from; llvmpipe scalarises
    /// workgroup-memory loads, so it keeps the register-blocked kernel.
    fn for_caps(caps: &Caps) -> Self {
        if caps.software {
            BufferLinear::Blocked
        } else {
            BufferLinear::Auto
        }
    }
}

impl Variant for TextureLinear {
    /// llvmpipe (8 lanes on 256-bit vectors): up to 1.3x the per-lane kernel's speed, never
    /// clearly slower (BENCHMARKS.md).
    fn for_caps(caps: &Caps) -> Self {
        if caps.subgroup_width == Some(8) {
            TextureLinear::Subgroup
        } else {
            TextureLinear::Lanes
        }
    }
}

impl BufferLinear {
    /// The kernel that runs an m x n product (`Auto` resolved by size).
    fn resolve(self, m: usize, n: usize) -> BufferLinear {
        match self {
            BufferLinear::Auto if m.div_ceil(128) * n.div_ceil(128) >= WIDE_MIN_GROUPS => {
                BufferLinear::Wide
            }
            BufferLinear::Auto => BufferLinear::Tiled,
            other => other,
        }
    }

    /// Profiler name and shader file for weights of `dtype` (of a resolved kernel).
    fn kernel(self, dtype: DType) -> (&'static str, &'static str) {
        match (self, dtype) {
            (BufferLinear::Blocked, DType::F32) => ("linear_f32", "linear.wgsl"),
            (BufferLinear::Blocked, DType::F16) => ("linear_f16", "linear.wgsl"),
            (BufferLinear::Blocked, DType::BF16) => ("linear_bf16", "linear.wgsl"),
            (BufferLinear::Tiled, DType::F32) => ("linear_tiled_f32", "linear_tiled.wgsl"),
            (BufferLinear::Tiled, DType::F16) => ("linear_tiled_f16", "linear_tiled.wgsl"),
            (BufferLinear::Tiled, DType::BF16) => ("linear_tiled_bf16", "linear_tiled.wgsl"),
            (BufferLinear::Wide, DType::F32) => ("linear_wide_f32", "linear_tiled_wide.wgsl"),
            (BufferLinear::Wide, DType::F16) => ("linear_wide_f16", "linear_tiled_wide.wgsl"),
            (BufferLinear::Wide, DType::BF16) => ("linear_wide_bf16", "linear_tiled_wide.wgsl"),
            (BufferLinear::Coop, DType::F32) => ("linear_coop_f32", "linear_coop.wgsl"),
            (BufferLinear::Coop, DType::F16) => ("linear_coop_f16", "linear_coop.wgsl"),
            (BufferLinear::Coop, DType::BF16) => ("linear_coop_bf16", "linear_coop.wgsl"),
            (BufferLinear::Auto, _) => unreachable!("Auto is resolved before its kernel is named"),
        }
    }

    /// Outputs per workgroup along (n, m) (of a resolved kernel).
    fn tile(self) -> (usize, usize) {
        match self {
            BufferLinear::Blocked => (TILE_N, TILE_M),
            BufferLinear::Tiled | BufferLinear::Coop => (64, 64),
            BufferLinear::Wide => (128, 128),
            BufferLinear::Auto => unreachable!("Auto is resolved before its tile is used"),
        }
    }
}

/// Kernels for matrices in textures (software adapters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TextureLinear {
    /// linear_texture.wgsl: 16 x 8 outputs per invocation, workgroups of 8 invocations, each
    /// loading its own x rows.
    Lanes,
    /// linear_texture_subgroup.wgsl: the same blocks, a workgroup being one subgroup, which
    /// loads its x rows once and broadcasts them. Needs subgroups exactly 8 wide
    /// (`Caps::subgroup_width`).
    Subgroup,
}

impl TextureLinear {
    /// Shader file for `step` k per loop step.
    fn file(self, step: usize) -> &'static str {
        match (self, step) {
            (TextureLinear::Lanes, 8) => "linear_texture_k8.wgsl",
            (TextureLinear::Lanes, _) => "linear_texture.wgsl",
            (TextureLinear::Subgroup, 8) => "linear_texture_k8_subgroup.wgsl",
            (TextureLinear::Subgroup, _) => "linear_texture_subgroup.wgsl",
        }
    }

    /// Outputs per workgroup along (n, m).
    fn tile(self) -> (usize, usize) {
        match self {
            // 16 x 8 outputs per invocation, one row of 8 invocations per workgroup.
            TextureLinear::Lanes | TextureLinear::Subgroup => (8 * 8, 16),
        }
    }

    /// Profiler name for weights of `dtype`.
    fn name(self, dtype: DType) -> &'static str {
        match (self, dtype) {
            (TextureLinear::Lanes, DType::F32) => "linear_texture_f32",
            (TextureLinear::Lanes, DType::F16) => "linear_texture_f16",
            (TextureLinear::Lanes, DType::BF16) => "linear_texture_bf16",
            (TextureLinear::Subgroup, DType::F32) => "linear_texture_subgroup_f32",
            (TextureLinear::Subgroup, DType::F16) => "linear_texture_subgroup_f16",
            (TextureLinear::Subgroup, DType::BF16) => "linear_texture_subgroup_bf16",
        }
    }
}

/// K per loop step of the texture matmul: eight where K allows (one texel of eight f16 or bf16,
/// or two f32 texels), so that each accumulator is updated once per eight k; else four.
fn step_k(k: usize) -> usize {
    if k.is_multiple_of(8) { 8 } else { 4 }
}

/// The texture kernel for weights of `dtype` taking `step` k per loop step, ending in `act`,
/// writing rows or (`nchw`) convolution pixels.
fn texture_kernel(gpu: &Gpu, dtype: DType, step: usize, act: Act, nchw: bool) -> Result<Kernel> {
    let variant = gpu.variant::<TextureLinear>();
    if variant == TextureLinear::Subgroup {
        expect_subgroups_of_8(gpu, "texture matmul")?;
    }
    // matrix.rs packs f16 and bf16 eight k per texel exactly when K is a multiple of 8.
    let snippet = match (dtype, step) {
        (DType::F16, 8) => "wtex_f16x8.wgsl",
        (DType::BF16, 8) => "wtex_bf16x8.wgsl",
        (DType::F32, 8) => "wtex_f32x8.wgsl",
        (DType::BF16, _) => "wtex_bf16.wgsl",
        (DType::F16, _) => "wtex_f16.wgsl",
        (DType::F32, _) => "wtex_f32.wgsl",
    };
    let parts = [
        snippet,
        "common.wgsl",
        "linear_texture_io.wgsl",
        variant.file(step),
    ];
    Ok(Kernel::new(variant.name(dtype), &parts)
        .define("ACT", act as u32)
        .define("NCHW", nchw as u32)
        .trusted())
}

/// Output placement of the texture matmul: row-major rows, or NCHW pixels (convolution).
#[derive(Clone, Copy)]
pub(crate) struct OutputRows {
    /// Global index of the first row of this dispatch.
    pub first: usize,
    /// Pixels per image for NCHW output; 0 for row-major.
    pub pix: usize,
}

/// Record the texture matmul of the x rows already packed in the input scratch texture
/// against every texture chunk of `w`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch_texture(
    gpu: &Gpu,
    x_tex: &wgpu::TextureView,
    rows: usize,
    w: &Matrix,
    bias: Option<&Tensor>,
    act: Act,
    y: Bind<'_>,
    out: OutputRows,
) -> Result<()> {
    let Store::Textures { chunks, interleave } = &w.store else {
        unreachable!("texture matmul of a buffer matrix")
    };
    let (n, k) = (w.rows(), w.cols());
    let step = step_k(k);
    let kernel = texture_kernel(gpu, w.dtype(), step, act, out.pix > 0)?;
    let (tile_n, tile_m) = gpu.variant::<TextureLinear>().tile();
    for chunk in chunks {
        let nc = chunk.rows.len();
        let b_bind = bias.map_or_else(|| gpu.unused(), |b| b.bind("bias"));
        let params = [
            rows as u32,
            nc as u32,
            (k / step) as u32,
            n as u32,
            chunk.rows.start as u32,
            bias.is_some() as u32,
            out.first as u32,
            out.pix as u32,
            *interleave as u32,
        ];
        let cost = Cost::new(
            2.0 * (rows * nc * k) as f64,
            (rows * k * 4 + nc * k * w.dtype().size() + rows * nc * 4) as f64,
        );
        gpu.dispatch(
            &kernel,
            words(&params),
            &[Bind::Texture(x_tex), Bind::Texture(&chunk.view), b_bind, y],
            [nc.div_ceil(tile_n) as u32, rows.div_ceil(tile_m) as u32, 1],
            cost,
        )?;
    }
    Ok(())
}

/// y = act(x W^T + b) into an existing [.., N] tensor.
pub fn linear_into(
    gpu: &Gpu,
    x: &Tensor,
    w: &Matrix,
    bias: Option<&Tensor>,
    act: Act,
    y: &Tensor,
) -> Result<()> {
    check(x, w, bias)?;
    let (n, k) = (w.rows(), w.cols());
    let m = x.rows();
    if y.numel() != m * n || y.cols() != n || y.dtype() != DType::F32 {
        return Err(KernelError::Shape {
            op: "linear",
            message: format!("output {:?} must be [{m}, {n}] f32", y.shape()),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment);
    let limit = gpu.max_binding();
    let row_items = [k as u64 * 4, n as u64 * 4];
    match &w.store {
        Store::Textures { .. } => {
            let max_rows = gpu.limits.max_texture_dimension_2d as usize;
            for rows in chunks_max(
                "linear input/output rows",
                m,
                &row_items,
                limit,
                align,
                max_rows,
            )? {
                let tex = rows_texture(gpu, "linear_pack", x, k, rows.clone())?;
                let y_bind = y.bind_range(
                    "y",
                    (rows.start * n * 4) as u64,
                    (rows.len() * n * 4) as u64,
                );
                dispatch_texture(
                    gpu,
                    &tex,
                    rows.len(),
                    w,
                    bias,
                    act,
                    y_bind,
                    OutputRows { first: 0, pix: 0 },
                )?;
            }
            Ok(())
        }
        Store::Buffer(wt) => linear_buffer(gpu, x, wt, bias, act, y, &row_items),
    }
}

fn linear_buffer(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
    y: &Tensor,
    row_items: &[u64],
) -> Result<()> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let m = x.rows();
    let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment);
    let limit = gpu.max_binding();
    let wsize = w.dtype().size() as u64;
    // Row chunks bound x and y; column chunks bound W. Both fit the binding limit.
    let row_chunks = chunks("linear input/output rows", m, row_items, limit, align)?;
    let col_chunks = chunks("linear weight rows", n, &[k as u64 * wsize], limit, align)?;
    let vec4 = k % 4 == 0;
    let variant = gpu.variant::<BufferLinear>().resolve(m, n);
    if variant == BufferLinear::Coop && !gpu.caps.coop_f16 {
        return Err(KernelError::Device(format!(
            "the cooperative-matrix matmul needs 16x16x16 f16 cooperative matrices on subgroups of 32; {} has none",
            gpu.adapter.label()
        )));
    }
    let kernel = if vec4 {
        let (name, file) = variant.kernel(w.dtype());
        let parts = [
            weight_snippet(gpu, w.dtype()),
            "common.wgsl",
            "linear_io.wgsl",
            file,
        ];
        Kernel::new(name, &parts)
            .define("ACT", act as u32)
            .trusted()
    } else {
        Kernel::new(
            "linear_scalar",
            &[
                weight_snippet(gpu, w.dtype()),
                "common.wgsl",
                "linear_scalar.wgsl",
            ],
        )
        .define("ACT", act as u32)
    };
    for rows in &row_chunks {
        for cols in &col_chunks {
            let (mc, nc) = (rows.len(), cols.len());
            let x_bind = x.bind_range("x", rows.start as u64 * k as u64 * 4, (mc * k * 4) as u64);
            let w_bind = w.bind_range(
                "weight",
                cols.start as u64 * k as u64 * wsize,
                nc as u64 * k as u64 * wsize,
            );
            let y_bind = y.bind_range("y", rows.start as u64 * n as u64 * 4, (mc * n * 4) as u64);
            let b_bind = bias.map_or_else(|| gpu.unused(), |b| b.bind("bias"));
            let kdim = if vec4 { k / 4 } else { k };
            let params = [
                mc as u32,
                nc as u32,
                kdim as u32,
                n as u32,
                cols.start as u32,
                bias.is_some() as u32,
            ];
            let groups = if vec4 {
                let (tn, tm) = variant.tile();
                [nc.div_ceil(tn) as u32, mc.div_ceil(tm) as u32, 1]
            } else {
                [nc.div_ceil(16) as u32, mc.div_ceil(16) as u32, 1]
            };
            let cost = Cost::new(
                2.0 * (mc * nc * k) as f64,
                (mc * k * 4 + nc * k * w.dtype().size() + mc * nc * 4) as f64,
            );
            gpu.dispatch(
                &kernel,
                words(&params),
                &[x_bind, w_bind, b_bind, y_bind],
                groups,
                cost,
            )?;
        }
    }
    Ok(())
}
