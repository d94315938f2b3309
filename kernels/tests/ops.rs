//! Every op against its CPU reference on fresh random inputs, on every adapter present
//! (lavapipe Vulkan with f16, llvmpipe GL without), with outputs poisoned by NaN first.
//! Sizes are awkward on purpose: not multiples of any tile, length 1, batch > 1.
//! Set NOISESHIFT_TEST_SEED to replay a failure; the seed in use is printed.

use noiseshift_kernels::ops::attention::{AttentionVariant, KvSource, QuerySource, ScoreMods};
use noiseshift_kernels::ops::conv::{BufferConv, ConvGeometry};
use noiseshift_kernels::ops::layout::PatchOrder;
use noiseshift_kernels::ops::matmul::{BufferLinear, TextureLinear};
use noiseshift_kernels::ops::norm::{Heads, Modulation};
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::reference as cpu;
use noiseshift_kernels::{
    DType, Gpu, GpuOptions, KernelError, Matrix, MatrixLayout, Tensor, test_adapters,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One context per adapter, poisoning new tensors.
fn gpus() -> Vec<Gpu> {
    let adapters = test_adapters();
    assert!(
        !adapters.is_empty(),
        "tests need a wgpu adapter (install mesa-vulkan-drivers)"
    );
    adapters
        .iter()
        .map(|a| {
            let gpu = Gpu::new(&GpuOptions {
                device: Some(a.index.to_string()),
                ..Default::default()
            })
            .unwrap();
            gpu.set_poison(true);
            gpu
        })
        .collect()
}

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("NOISESHIFT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test}: NOISESHIFT_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn randn(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (r.random::<f32>() * 2.0 - 1.0) * scale * 1.7)
        .collect()
}

/// ||a - b|| / ||b||, and an assertion that it is below `tol` with no NaN anywhere.
fn assert_close(what: &str, gpu: &Gpu, got: &[f32], want: &[f32], tol: f64) {
    assert_close_scaled(what, gpu, got, want, want, tol);
}

/// ||a - b|| / ||scale||: for sums whose terms may cancel, `scale` is the same computation on
/// absolute values (the usual forward-error bound), so a near-zero result does not make a
/// rounding-sized difference look large.
fn assert_close_scaled(what: &str, gpu: &Gpu, got: &[f32], want: &[f32], scale: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what} on {}: non-finite output (unwritten element?)",
        gpu.adapter.label()
    );
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let den: f64 = scale
        .iter()
        .map(|b| f64::from(*b).powi(2))
        .sum::<f64>()
        .max(1e-30);
    let err = (num / den).sqrt();
    println!(
        "{what} on {}: relative error {err:.2e}",
        gpu.adapter.label()
    );
    assert!(
        err <= tol,
        "{what} on {}: relative error {err:.2e} > {tol:.0e}",
        gpu.adapter.label()
    );
}

fn stored(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

/// Store values in `dtype` (rounding them) and return the rounded values as the reference sees them.
fn weight(gpu: &Gpu, shape: &[usize], values: &[f32], dtype: DType) -> (Tensor, Vec<f32>) {
    let bytes = stored(values, dtype);
    (
        Tensor::from_raw(gpu, shape, dtype, &bytes).unwrap(),
        dtype.to_f32(&bytes),
    )
}

/// A weight matrix [n, k] in `dtype` and `layout`, uploaded in two row blocks (as fused q/k/v
/// are), and the rounded values.
fn matrix(
    gpu: &Gpu,
    n: usize,
    k: usize,
    values: &[f32],
    dtype: DType,
    layout: MatrixLayout,
) -> (Matrix, Vec<f32>) {
    let bytes = stored(values, dtype);
    // Buffers take parts at 4-byte boundaries only (always true of real q/k/v blocks).
    let split = (n / 3) * k * dtype.size();
    let parts: Vec<&[u8]> = if split.is_multiple_of(4) {
        vec![&bytes[..split], &bytes[split..]]
    } else {
        vec![&bytes]
    };
    let m = Matrix::upload(gpu, n, k, dtype, &parts, layout).unwrap();
    assert_eq!(m.is_texture(), layout == MatrixLayout::Texture);
    (m, dtype.to_f32(&bytes))
}

/// The layouts a [*, k] matrix can take.
fn layouts(k: usize) -> Vec<MatrixLayout> {
    if k.is_multiple_of(4) {
        vec![MatrixLayout::Buffer, MatrixLayout::Texture]
    } else {
        vec![MatrixLayout::Buffer]
    }
}

/// One way a matmul can run: where the weights live and which kernel reads them.
#[derive(Clone, Copy, Debug)]
enum MatmulKernel {
    Buffer(BufferLinear),
    Texture(TextureLinear),
}

impl MatmulKernel {
    fn layout(self) -> MatrixLayout {
        match self {
            MatmulKernel::Buffer(_) => MatrixLayout::Buffer,
            MatmulKernel::Texture(_) => MatrixLayout::Texture,
        }
    }

    /// Error allowed relative to sum |x| |w|: f32 rounding, or f16's for the cooperative
    /// matrices, which round both operands to f16.
    fn tolerance(self) -> f64 {
        match self {
            MatmulKernel::Buffer(BufferLinear::Coop) => 1e-3,
            _ => F32_TOL,
        }
    }

    fn select(self, gpu: &Gpu) {
        match self {
            MatmulKernel::Buffer(b) => gpu.force_variant(Some(b)),
            MatmulKernel::Texture(t) => gpu.force_variant(Some(t)),
        }
    }
}

/// Each way a matmul can run on `gpu` for inner size k: every buffer kernel the device can run,
/// then every texture kernel it can run.
fn matmul_variants(gpu: &Gpu, k: usize) -> Vec<MatmulKernel> {
    let mut v = vec![
        MatmulKernel::Buffer(BufferLinear::Blocked),
        MatmulKernel::Buffer(BufferLinear::Tiled),
        MatmulKernel::Buffer(BufferLinear::Wide),
        MatmulKernel::Buffer(BufferLinear::Auto),
    ];
    if gpu.caps.coop_f16 {
        v.push(MatmulKernel::Buffer(BufferLinear::Coop));
    }
    if k.is_multiple_of(4) {
        v.extend(texture_variants(gpu).into_iter().map(MatmulKernel::Texture));
    }
    v
}

/// The texture kernels `gpu` can run: the subgroup one needs subgroups 8 wide.
fn texture_variants(gpu: &Gpu) -> Vec<TextureLinear> {
    let mut v = vec![TextureLinear::Lanes];
    if gpu.caps.subgroup_width == Some(8) {
        v.push(TextureLinear::Subgroup);
    }
    v
}

const F32_TOL: f64 = 2e-6;

#[test]
fn linear_all_dtypes_and_awkward_shapes() {
    let mut r = rng("linear");
    for gpu in gpus() {
        // (m, n, k): tails in m and n, k = 4 (one vec4), k not a multiple of 4 (scalar kernel),
        // k = 64 (rows of 256 bytes: the texture path copies instead of packing), and 3 x 3
        // blocks of the tiled kernel with a partial last step of k.
        for &(m, n, k) in &[
            (1, 1, 4),
            (37, 29, 68),
            (70, 67, 4),
            (5, 3, 7),
            (130, 9, 33),
            (33, 20, 64),
            (150, 131, 72),
            // Several workgroups along both m and n of every texture kernel (16 rows, 64
            // columns per workgroup) and of the buffer ones.
            (300, 131, 8),
            // One row (adaLN) with eight k per step.
            (1, 70, 16),
        ] {
            let variants = matmul_variants(&gpu, k);
            // The activation is built into each pipeline (as the dtype is), so every kernel
            // meets each activation with one dtype rather than all nine pairs: the same
            // coverage of each for a third of llvmpipe's compile time.
            let cases = [
                (DType::F32, Act::None, true),
                (DType::F16, Act::GeluTanh, false),
                (DType::BF16, Act::Silu, true),
            ];
            for (kernel, (dtype, act, with_bias)) in variants
                .iter()
                .flat_map(|v| cases.iter().map(move |c| (*v, *c)))
            {
                kernel.select(&gpu);
                let layout = kernel.layout();
                let x = randn(&mut r, m * k, 1.0);
                let (w, wr) = matrix(&gpu, n, k, &randn(&mut r, n * k, 0.5), dtype, layout);
                let b = randn(&mut r, n, 0.5);
                let xt = Tensor::from_f32(&gpu, &[m, k], &x).unwrap();
                let bt = Tensor::from_f32(&gpu, &[n], &b).unwrap();
                let y = ops::matmul::linear(&gpu, &xt, &w, with_bias.then_some(&bt), act).unwrap();
                let want = cpu::linear(&x, &wr, with_bias.then_some(&b[..]), m, n, k, act);
                let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
                let scale = cpu::linear(
                    &abs(&x),
                    &abs(&wr),
                    with_bias.then_some(&abs(&b)[..]),
                    m,
                    n,
                    k,
                    Act::None,
                );
                let what = format!("linear {m}x{n}x{k} {dtype} {kernel:?} {act:?}");
                assert_close_scaled(
                    &what,
                    &gpu,
                    &y.to_vec(&gpu).unwrap(),
                    &want,
                    &scale,
                    kernel.tolerance(),
                );
            }
        }
    }
}

#[test]
fn linear_texture_chunks_and_layouts() {
    let mut r = rng("linear_texture_chunks");
    for mut gpu in gpus() {
        // Lowered texture limits: weight textures of several chunks, with 8 rows interleaved per
        // texture row where 8 x K / (k per texel) fits the limit, else the plain layout (f32:
        // 18 texels per row, interleaved at 150 only; f16 and bf16: 9, interleaved at 150 and 100).
        // 70 rows: a partial last row block of every kernel (16 rows per invocation).
        let limit = gpu.limits.max_texture_dimension_2d;
        let (m, n, k) = (70, 1300, 72);
        for variant in texture_variants(&gpu) {
            gpu.force_variant(Some(variant));
            for max_dim in [150, 100, 60] {
                gpu.limits.max_texture_dimension_2d = max_dim;
                for dtype in [DType::F32, DType::F16, DType::BF16] {
                    let x = randn(&mut r, m * k, 1.0);
                    let b = randn(&mut r, n, 0.5);
                    let (w, wr) = matrix(
                        &gpu,
                        n,
                        k,
                        &randn(&mut r, n * k, 0.5),
                        dtype,
                        MatrixLayout::Texture,
                    );
                    let xt = Tensor::from_f32(&gpu, &[m, k], &x).unwrap();
                    let bt = Tensor::from_f32(&gpu, &[n], &b).unwrap();
                    let y = ops::matmul::linear(&gpu, &xt, &w, Some(&bt), Act::None).unwrap();
                    let want = cpu::linear(&x, &wr, Some(&b), m, n, k, Act::None);
                    assert_close(
                        &format!(
                            "linear {m}x{n}x{k} {dtype} {variant:?}, textures of at most {max_dim}"
                        ),
                        &gpu,
                        &y.to_vec(&gpu).unwrap(),
                        &want,
                        F32_TOL,
                    );
                }
            }
            gpu.limits.max_texture_dimension_2d = limit;
        }
        // Where subgroups are not 8 wide (GL has none), the subgroup kernel is refused by name.
        if gpu.caps.subgroup_width != Some(8) {
            gpu.force_variant(Some(TextureLinear::Subgroup));
            let x = Tensor::from_f32(&gpu, &[m, k], &randn(&mut r, m * k, 1.0)).unwrap();
            let (w, _) = matrix(
                &gpu,
                n,
                k,
                &randn(&mut r, n * k, 0.5),
                DType::F32,
                MatrixLayout::Texture,
            );
            let err = ops::matmul::linear(&gpu, &x, &w, None, Act::None).unwrap_err();
            assert!(err.to_string().contains("subgroups 8 wide"), "{err}");
        }
    }
}

#[test]
fn linear_splits_work_past_the_binding_limit() {
    let mut r = rng("linear_split");
    for a in test_adapters() {
        // 4 KiB bindings: x (300 x 64 f32 = 75 KiB), y (47 KiB) and W (40 x 64 f16 = 5 KiB) must be split.
        let gpu = Gpu::new(&GpuOptions {
            device: Some(a.index.to_string()),
            max_binding_bytes: Some(4096),
            ..Default::default()
        })
        .unwrap();
        gpu.set_poison(true);
        let (m, n, k) = (300, 40, 64);
        let x = randn(&mut r, m * k, 1.0);
        let b = randn(&mut r, n, 0.5);
        let xt = Tensor::from_f32(&gpu, &[m, k], &x).unwrap();
        let bt = Tensor::from_f32(&gpu, &[n], &b).unwrap();
        for kernel in matmul_variants(&gpu, k) {
            kernel.select(&gpu);
            let (w, wr) = matrix(
                &gpu,
                n,
                k,
                &randn(&mut r, n * k, 0.5),
                DType::F16,
                kernel.layout(),
            );
            let y = ops::matmul::linear(&gpu, &xt, &w, Some(&bt), Act::None).unwrap();
            let want = cpu::linear(&x, &wr, Some(&b), m, n, k, Act::None);
            assert_close(
                &format!("split linear {kernel:?}"),
                &gpu,
                &y.to_vec(&gpu).unwrap(),
                &want,
                kernel.tolerance(),
            );
        }
        // Flat ops split too.
        let y = ops::activation::activation(&gpu, &xt, Act::Silu).unwrap();
        let want: Vec<f32> = x
            .iter()
            .map(|&v| cpu::activate(f64::from(v), Act::Silu) as f32)
            .collect();
        assert_close("split silu", &gpu, &y.to_vec(&gpu).unwrap(), &want, F32_TOL);
        // An op that cannot split refuses with the limit named, instead of truncating.
        let err = ops::norm::layer_norm(&gpu, &xt, None, None, None, 1e-6).unwrap_err();
        assert!(matches!(err, KernelError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains("max_storage_buffer_binding_size"),
            "{err}"
        );
    }
}

#[test]
fn linear_rejects_mismatched_operands() {
    let gpu = &gpus()[0];
    let x = Tensor::from_f32(gpu, &[3, 8], &[0.0; 24]).unwrap();
    let (w, _) = matrix(gpu, 5, 7, &[0.0; 35], DType::F32, MatrixLayout::Buffer);
    let err = ops::matmul::linear(gpu, &x, &w, None, Act::None).unwrap_err();
    assert!(err.to_string().contains("K = 7"), "{err}");
    let (w, _) = matrix(gpu, 5, 8, &[0.0; 40], DType::F32, MatrixLayout::Buffer);
    let bad_bias = Tensor::from_f32(gpu, &[4], &[0.0; 4]).unwrap();
    let err = ops::matmul::linear(gpu, &x, &w, Some(&bad_bias), Act::None).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

#[test]
fn activations() {
    let mut r = rng("activations");
    for gpu in gpus() {
        // 1001 elements take the scalar kernel, 1144 the vec4 one.
        for rows in [7, 8] {
            let x = randn(&mut r, rows * 143, 6.0);
            let xt = Tensor::from_f32(&gpu, &[rows, 143], &x).unwrap();
            for act in [Act::GeluTanh, Act::GeluErf, Act::QuickGelu, Act::Silu] {
                let y = ops::activation::activation(&gpu, &xt, act).unwrap();
                let want: Vec<f32> = x
                    .iter()
                    .map(|&v| cpu::activate(f64::from(v), act) as f32)
                    .collect();
                assert_close(
                    &format!("{act:?} on {} elements", x.len()),
                    &gpu,
                    &y.to_vec(&gpu).unwrap(),
                    &want,
                    F32_TOL,
                );
            }
        }
    }
}

/// Every attention kernel `gpu` can run: the subgroup one needs subgroups 8 wide.
fn attention_variants(gpu: &Gpu) -> Vec<AttentionVariant> {
    let mut v = vec![AttentionVariant::Buffer, AttentionVariant::Texture];
    if gpu.caps.subgroup_width == Some(8) {
        v.push(AttentionVariant::TextureSubgroup);
    }
    v
}

#[test]
fn attention_one_and_two_sources() {
    let mut r = rng("attention");
    for gpu in gpus() {
        for &(batch, heads, d, lq, l1, l2) in &[
            (1, 1, 4, 1, 1, 0),
            (2, 3, 16, 37, 29, 10),
            (1, 2, 64, 65, 70, 3),
            (2, 1, 128, 5, 10, 0),
            // FLUX's heads of 128, two sources (text and image tokens).
            (1, 2, 128, 9, 7, 5),
            // Key/value rows whose pitch is a multiple of 256 bytes are copied into the
            // textures, the others packed: here the first key source's values start 128 bytes
            // into its 256-byte rows, in two batches.
            (2, 2, 16, 7, 9, 6),
        ] {
            let width = heads * d;
            // q from a fused qkv of stream 1 (stride 3w), k/v from the same and from a second stream.
            let s1 = randn(&mut r, batch * lq * 3 * width, 1.0);
            let s2 = randn(&mut r, batch * l2 * 3 * width, 1.0);
            let s1_t = Tensor::from_f32(&gpu, &[batch * lq, 3 * width], &s1).unwrap();
            let s2_t = Tensor::from_f32(
                &gpu,
                &[batch * l2.max(1), 3 * width],
                &if l2 == 0 {
                    vec![0.0; batch * 3 * width]
                } else {
                    s2.clone()
                },
            )
            .unwrap();
            // The first key source is its own tensor (different length from the queries).
            let kv1 = randn(&mut r, batch * l1 * 2 * width, 1.0);
            let kv1_t = Tensor::from_f32(&gpu, &[batch * l1, 2 * width], &kv1).unwrap();
            let scale = 1.0 / (d as f32).sqrt();
            let mut sources = vec![KvSource {
                tensor: &kv1_t,
                len: l1,
                k_off: 0,
                v_off: width,
            }];
            if l2 > 0 {
                sources.push(KvSource {
                    tensor: &s2_t,
                    len: l2,
                    k_off: width,
                    v_off: 2 * width,
                });
            }
            let query = QuerySource {
                tensor: &s1_t,
                len: lq,
                off: 0,
            };
            let outs: Vec<(AttentionVariant, Tensor)> = attention_variants(&gpu)
                .into_iter()
                .map(|v| {
                    (
                        v,
                        ops::attention::attention_with(
                            &gpu, query, &sources, batch, heads, d, scale, v,
                        )
                        .unwrap(),
                    )
                })
                .collect();
            let q = cpu::Rows {
                data: &s1,
                len: lq,
                stride: 3 * width,
            };
            let k1 = cpu::Rows {
                data: &kv1,
                len: l1,
                stride: 2 * width,
            };
            let k2 = cpu::Rows {
                data: &s2,
                len: l2,
                stride: 3 * width,
            };
            let mut kv: Vec<(&cpu::Rows, usize, usize)> = vec![(&k1, 0, width)];
            if l2 > 0 {
                kv.push((&k2, width, 2 * width));
            }
            let want = cpu::attention(&q, 0, &kv, batch, heads, d, f64::from(scale));
            for (variant, out) in outs {
                let what =
                    format!("attention {variant:?} b{batch} h{heads} d{d} lq{lq} l{l1}+{l2}");
                assert_close(&what, &gpu, &out.to_vec(&gpu).unwrap(), &want, 5e-6);
            }
        }
        // Where subgroups are not 8 wide (GL has none), the subgroup kernel is refused by name.
        if gpu.caps.subgroup_width != Some(8) {
            let t = Tensor::from_f32(&gpu, &[2, 8], &randn(&mut r, 16, 1.0)).unwrap();
            let err = ops::attention::attention_with(
                &gpu,
                QuerySource {
                    tensor: &t,
                    len: 2,
                    off: 0,
                },
                &[KvSource {
                    tensor: &t,
                    len: 2,
                    k_off: 0,
                    v_off: 4,
                }],
                1,
                1,
                4,
                1.0,
                AttentionVariant::TextureSubgroup,
            )
            .unwrap_err();
            assert!(err.to_string().contains("subgroups 8 wide"), "{err}");
        }
    }
}

#[test]
fn attention_causal_mask_and_bias() {
    let mut r = rng("attention_mods");
    for gpu in gpus() {
        // (causal, bias) per case: each switch pair compiles its own kernels, which llvmpipe
        // takes seconds for, so every pair is covered once at sizes that cross block edges.
        for &(batch, heads, d, lq, l1, l2, causal, with_bias) in &[
            (1, 1, 4, 1, 1, 0, true, true),
            // CLIP-like: 77 tokens, one source.
            (2, 3, 16, 77, 77, 0, true, false),
            // T5-like, and fewer queries than keys from two sources.
            (1, 2, 64, 13, 13, 0, false, true),
            (2, 2, 16, 5, 6, 3, true, true),
        ] {
            let width = heads * d;
            let lk = l1 + l2;
            let qd = randn(&mut r, batch * lq * width, 1.0);
            let k1 = randn(&mut r, batch * l1 * 2 * width, 1.0);
            let k2 = randn(&mut r, batch * l2.max(1) * 2 * width, 1.0);
            let bias = randn(&mut r, heads * lq * lk, 3.0);
            let qt = Tensor::from_f32(&gpu, &[batch * lq, width], &qd).unwrap();
            let k1t = Tensor::from_f32(&gpu, &[batch * l1, 2 * width], &k1).unwrap();
            let k2t = Tensor::from_f32(&gpu, &[batch * l2.max(1), 2 * width], &k2).unwrap();
            let bt = Tensor::from_f32(&gpu, &[heads, lq, lk], &bias).unwrap();
            let mut sources = vec![KvSource {
                tensor: &k1t,
                len: l1,
                k_off: 0,
                v_off: width,
            }];
            if l2 > 0 {
                sources.push(KvSource {
                    tensor: &k2t,
                    len: l2,
                    k_off: 0,
                    v_off: width,
                });
            }
            let rows = |data, len, stride| cpu::Rows { data, len, stride };
            let (cq, c1, c2) = (
                rows(&qd, lq, width),
                rows(&k1, l1, 2 * width),
                rows(&k2, l2, 2 * width),
            );
            let mut kv: Vec<(&cpu::Rows, usize, usize)> = vec![(&c1, 0, width)];
            if l2 > 0 {
                kv.push((&c2, 0, width));
            }
            let scale = 0.3;
            let want = cpu::attention_scored(
                &cq,
                0,
                &kv,
                [batch, heads, d],
                f64::from(scale),
                causal,
                with_bias.then_some(&bias[..]),
            );
            let mods = ScoreMods {
                causal,
                bias: with_bias.then_some(&bt),
            };
            for variant in attention_variants(&gpu) {
                let out = ops::attention::attention_mods(
                    &gpu,
                    QuerySource {
                        tensor: &qt,
                        len: lq,
                        off: 0,
                    },
                    &sources,
                    batch,
                    heads,
                    d,
                    scale,
                    mods,
                    variant,
                )
                .unwrap();
                let what = format!(
                    "attention {variant:?} causal {causal} bias {with_bias} b{batch} h{heads} d{d} lq{lq} l{l1}+{l2}"
                );
                assert_close(&what, &gpu, &out.to_vec(&gpu).unwrap(), &want, 5e-6);
            }
            // A bias of the wrong shape is refused, naming the expected one.
            let wrong = Tensor::from_f32(
                &gpu,
                &[heads, lq, lk + 1],
                &vec![0.0; heads * lq * (lk + 1)],
            )
            .unwrap();
            let err = ops::attention::attention_mods(
                &gpu,
                QuerySource {
                    tensor: &qt,
                    len: lq,
                    off: 0,
                },
                &sources,
                batch,
                heads,
                d,
                scale,
                ScoreMods {
                    causal: false,
                    bias: Some(&wrong),
                },
                AttentionVariant::Auto,
            )
            .unwrap_err();
            assert!(
                err.to_string().contains(&format!("[{heads}, {lq}, {lk}]")),
                "{err}"
            );
        }
    }
}

#[test]
fn attention_large_scores_stay_finite() {
    // Scores near 1e3 overflow a naive exp; the online softmax must subtract its running max.
    let gpu = &gpus()[0];
    let mut r = rng("attention_large");
    let (l, d) = (33, 8);
    let q = randn(&mut r, l * d, 30.0);
    let qt = Tensor::from_f32(gpu, &[l, d], &q).unwrap();
    let kv = randn(&mut r, l * 2 * d, 30.0);
    let kvt = Tensor::from_f32(gpu, &[l, 2 * d], &kv).unwrap();
    let want = cpu::attention(
        &cpu::Rows {
            data: &q,
            len: l,
            stride: d,
        },
        0,
        &[(
            &cpu::Rows {
                data: &kv,
                len: l,
                stride: 2 * d,
            },
            0,
            d,
        )],
        1,
        1,
        d,
        1.0,
    );
    for variant in attention_variants(gpu) {
        let sources = [KvSource {
            tensor: &kvt,
            len: l,
            k_off: 0,
            v_off: d,
        }];
        let out = ops::attention::attention_with(
            gpu,
            QuerySource {
                tensor: &qt,
                len: l,
                off: 0,
            },
            &sources,
            1,
            1,
            d,
            1.0,
            variant,
        )
        .unwrap();
        // Scores of a few thousand carry f32 rounding of ~1e-4 in the exponent, which rows
        // whose two best keys nearly tie pass on to the output: the kernels measured up to
        // 1.5e-5 against the f64 reference (6.6e-6 at worst over seeds 1-25), where an
        // overflowing softmax gives NaN or errors of order 1.
        assert_close(
            &format!("attention {variant:?} large scores"),
            gpu,
            &out.to_vec(gpu).unwrap(),
            &want,
            1e-4,
        );
    }
}

#[test]
fn layer_norm_variants_and_long_rows() {
    let mut r = rng("layer_norm");
    for mut gpu in gpus() {
        // Both configurations on each adapter: software (8 rows per workgroup, x read through
        // a texture when rows are vec4s) and hardware (one row per workgroup, x from the buffer).
        for software in [true, false] {
            gpu.caps.software = software;
            // d = 77 takes the scalar kernel, 76 the vec4 one.
            for d in [77, 76] {
                let label = format!("d={d} software={software}");
                check_layer_norm(&gpu, &mut r, &label, d, 2, 5);
            }
        }
        // Rows in several texture chunks (the height limit lowered; the sample boundary at
        // row 35 falls inside a chunk), through the copy (d = 64) and the pack kernel (d = 76).
        gpu.caps.software = true;
        let height = gpu.limits.max_texture_dimension_2d;
        gpu.limits.max_texture_dimension_2d = 32;
        for d in [64, 76] {
            check_layer_norm(&gpu, &mut r, &format!("d={d} in chunks"), d, 2, 35);
        }
        gpu.limits.max_texture_dimension_2d = height;

        // Rows of 1e5 elements with mean 1000 and std 1: one-pass variance would lose it all.
        let n = 100_000;
        let long: Vec<f32> = randn(&mut r, 2 * n, 1.0)
            .iter()
            .map(|v| v + 1000.0)
            .collect();
        let lt = Tensor::from_f32(&gpu, &[2, n], &long).unwrap();
        let y = ops::norm::layer_norm(&gpu, &lt, None, None, None, 1e-6).unwrap();
        assert_close(
            "layer_norm 1e5 row, mean 1e3",
            &gpu,
            &y.to_vec(&gpu).unwrap(),
            &cpu::layer_norm(&long, n, None, None, None, 1e-6),
            1e-6,
        );
    }
}

/// LayerNorm of `b` samples of `tokens` rows of `d`: plain, affine, weighted, and modulated.
fn check_layer_norm(gpu: &Gpu, r: &mut StdRng, label: &str, d: usize, b: usize, tokens: usize) {
    let x = randn(r, b * tokens * d, 2.0);
    let w = randn(r, d, 1.0);
    let bias = randn(r, d, 1.0);
    let table = randn(r, b * 6 * d, 0.5);
    let xt = Tensor::from_f32(gpu, &[b, tokens, d], &x).unwrap();
    let wt = Tensor::from_f32(gpu, &[d], &w).unwrap();
    let bt = Tensor::from_f32(gpu, &[d], &bias).unwrap();
    let tt = Tensor::from_f32(gpu, &[b, 6 * d], &table).unwrap();
    let plain = ops::norm::layer_norm(gpu, &xt, None, None, None, 1e-6).unwrap();
    assert_close(
        &format!("layer_norm {label}"),
        gpu,
        &plain.to_vec(gpu).unwrap(),
        &cpu::layer_norm(&x, d, None, None, None, 1e-6),
        F32_TOL,
    );
    let affine = ops::norm::layer_norm(gpu, &xt, Some(&wt), Some(&bt), None, 1e-5).unwrap();
    assert_close(
        &format!("layer_norm affine {label}"),
        gpu,
        &affine.to_vec(gpu).unwrap(),
        &cpu::layer_norm(&x, d, Some(&w), Some(&bias), None, 1e-5),
        F32_TOL,
    );
    // Weight without bias: each is a separate build-time switch of the kernel.
    let weighted = ops::norm::layer_norm(gpu, &xt, Some(&wt), None, None, 1e-6).unwrap();
    assert_close(
        &format!("layer_norm weight only {label}"),
        gpu,
        &weighted.to_vec(gpu).unwrap(),
        &cpu::layer_norm(&x, d, Some(&w), None, None, 1e-6),
        F32_TOL,
    );
    let m = Modulation {
        table: &tt,
        tokens,
        shift: 3,
        scale: 4,
    };
    let modulated = ops::norm::layer_norm(gpu, &xt, None, None, Some(m), 1e-6).unwrap();
    let want = cpu::layer_norm(
        &x,
        d,
        None,
        None,
        Some((&table, tokens, 6 * d, 3 * d, 4 * d)),
        1e-6,
    );
    assert_close(
        &format!("layer_norm modulated {label}"),
        gpu,
        &modulated.to_vec(gpu).unwrap(),
        &want,
        F32_TOL,
    );
}

#[test]
fn rms_norm_and_rope_on_head_segments() {
    let mut r = rng("rms_rope");
    for gpu in gpus() {
        // Heads of 8 in rows of 76 take the vec4 kernel; heads of 10 in rows of 92 the scalar one.
        for (d, pad) in [(8, 4), (10, 2)] {
            let (rows, heads) = (13, 3);
            let stride = 3 * heads * d + pad;
            let x = randn(&mut r, rows * stride, 2.0);
            let w = randn(&mut r, d, 1.0);
            let view = Heads {
                col_off: heads * d,
                heads,
                d,
            };
            let xt = Tensor::from_f32(&gpu, &[rows, stride], &x).unwrap();
            let wt = Tensor::from_f32(&gpu, &[d], &w).unwrap();
            ops::norm::rms_norm_heads(&gpu, &xt, view, &wt, 1e-6).unwrap();
            let want = cpu::rms_norm_heads(&x, stride, heads * d, heads, d, &w, 1e-6);
            assert_close(
                &format!("rms_norm heads of {d}"),
                &gpu,
                &xt.to_vec(&gpu).unwrap(),
                &want,
                F32_TOL,
            );
        }
        // RoPE: 2 samples of 13 tokens (table row = row mod 13), positions on three axes, for
        // several axis splits: a tiny one, the FLUX fixtures' and FLUX.1's 128-wide heads.
        for (axes, heads) in [([2, 4, 4], 3), ([4, 6, 6], 2), ([16, 56, 56], 2)] {
            let d: usize = axes.iter().sum();
            let (tokens, rows) = (13, 26);
            let stride = 3 * heads * d + 4;
            let x = randn(&mut r, rows * stride, 2.0);
            let view = Heads {
                col_off: heads * d,
                heads,
                d,
            };
            let positions: Vec<Vec<f64>> = (0..tokens)
                .map(|t| vec![0.0, (t / 4) as f64, (t % 4) as f64 + 100.0])
                .collect();
            let (cos, sin) = ops::rope::rope_tables(&positions, &axes, 10000.0);
            let ct = Tensor::from_f32(&gpu, &[tokens, d / 2], &cos).unwrap();
            let st = Tensor::from_f32(&gpu, &[tokens, d / 2], &sin).unwrap();
            let xt = Tensor::from_f32(&gpu, &[rows, stride], &x).unwrap();
            ops::rope::rope(&gpu, &xt, view, &ct, &st).unwrap();
            let want = cpu::rope(&x, stride, heads * d, heads, d, &cos, &sin);
            assert_close(
                &format!("rope, axes {axes:?}"),
                &gpu,
                &xt.to_vec(&gpu).unwrap(),
                &want,
                F32_TOL,
            );
        }
    }
}

#[test]
fn group_norm_with_silu() {
    let mut r = rng("group_norm");
    for mut gpu in gpus() {
        // Both configurations on each adapter: software (x read through the flat texture when
        // pixels are vec4s) and hardware (x from the buffer).
        for software in [true, false] {
            gpu.caps.software = software;
            // 5 x 7 pixels take the scalar kernel, 4 x 6 the vec4 one.
            for (h, w) in [(5, 7), (4, 6)] {
                check_group_norm(
                    &gpu,
                    &mut r,
                    &format!("{h}x{w} software={software}"),
                    2,
                    h,
                    w,
                );
            }
        }
        // Textures 16 texels wide and high: 20 groups of 18 texels go in dispatches of 14 and
        // 6 groups, the first filling 15 whole texture rows and part of a 16th
        // (after the cases above, whose scratch texture is wider than that).
        gpu.caps.software = true;
        let limit = gpu.limits.max_texture_dimension_2d;
        gpu.limits.max_texture_dimension_2d = 16;
        check_group_norm(&gpu, &mut r, "in chunks", 5, 4, 6);
        gpu.limits.max_texture_dimension_2d = limit;
    }
}

/// GroupNorm + SiLU of `b` samples of 12 channels of h x w in 4 groups, offset by 50.
fn check_group_norm(gpu: &Gpu, r: &mut StdRng, label: &str, b: usize, h: usize, w: usize) {
    let (c, groups) = (12, 4);
    let x: Vec<f32> = randn(r, b * c * h * w, 3.0)
        .iter()
        .map(|v| v + 50.0)
        .collect();
    let wt = randn(r, c, 1.0);
    let bt = randn(r, c, 1.0);
    let y = ops::norm::group_norm(
        gpu,
        &Tensor::from_f32(gpu, &[b, c, h, w], &x).unwrap(),
        groups,
        &Tensor::from_f32(gpu, &[c], &wt).unwrap(),
        &Tensor::from_f32(gpu, &[c], &bt).unwrap(),
        1e-6,
        Act::Silu,
    )
    .unwrap();
    let want = cpu::group_norm(&x, c, h * w, groups, &wt, &bt, 1e-6, Act::Silu);
    assert_close(
        &format!("group_norm silu {label}"),
        gpu,
        &y.to_vec(gpu).unwrap(),
        &want,
        5e-6,
    );
}

#[test]
fn modulate_and_gated_residual() {
    let mut r = rng("modulate");
    for gpu in gpus() {
        // d = 45 takes the scalar kernels, 44 the vec4 ones; 3 samples of 7 rows cross the
        // kernels' groups of 8 rows.
        for d in [45, 44] {
            let (b, tokens, chunks) = (3, 7, 6);
            let x = randn(&mut r, b * tokens * d, 1.0);
            let y = randn(&mut r, b * tokens * d, 1.0);
            let table = randn(&mut r, b * chunks * d, 1.0);
            let xt = Tensor::from_f32(&gpu, &[b * tokens, d], &x).unwrap();
            let yt = Tensor::from_f32(&gpu, &[b * tokens, d], &y).unwrap();
            let tt = Tensor::from_f32(&gpu, &[b, chunks * d], &table).unwrap();
            let out = ops::modulate::modulate(
                &gpu,
                &xt,
                Modulation {
                    table: &tt,
                    tokens,
                    shift: 0,
                    scale: 1,
                },
            )
            .unwrap();
            assert_close(
                &format!("modulate d={d}"),
                &gpu,
                &out.to_vec(&gpu).unwrap(),
                &cpu::modulate(&x, d, tokens, &table, chunks * d, 0, d),
                F32_TOL,
            );
            ops::modulate::gated_residual(&gpu, &xt, &yt, &tt, tokens, 5).unwrap();
            let want = cpu::gated_residual(&x, &y, d, tokens, &table, chunks * d, 5 * d);
            assert_close(
                &format!("gated_residual d={d}"),
                &gpu,
                &xt.to_vec(&gpu).unwrap(),
                &want,
                F32_TOL,
            );
            let err = ops::modulate::modulate(
                &gpu,
                &xt,
                Modulation {
                    table: &tt,
                    tokens,
                    shift: 6,
                    scale: 1,
                },
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("outside the modulation row"),
                "{err}"
            );
        }
    }
}

/// Each way a convolution can run for weights of `layout`: every buffer kernel, or the texture
/// path (im2col and the texture matmul).
fn conv_variants(layout: MatrixLayout) -> Vec<Option<BufferConv>> {
    match layout {
        MatrixLayout::Texture => vec![None],
        _ => vec![Some(BufferConv::Direct), Some(BufferConv::Tiled)],
    }
}

#[test]
fn conv2d_geometries_and_dtypes() {
    let mut r = rng("conv2d");
    for gpu in gpus() {
        // 3x3 pad 1, 1x1, 2x2 stride 2 (patch embed), 3x3 stride 2 padded right/bottom (VAE
        // encoder); (b, h, w) 2 x 9 x 8 then 1 x 13 x 11: 143 pixels and 70 channels span
        // several 64 x 64 blocks of the tiled kernel, with partial ones.
        let cases: [(usize, ConvGeometry, [usize; 3]); 5] = [
            (5, ConvGeometry::square(3, 1, 1), [2, 9, 8]),
            (6, ConvGeometry::square(1, 1, 0), [2, 9, 8]),
            (3, ConvGeometry::square(2, 2, 0), [2, 9, 8]),
            (
                7,
                ConvGeometry {
                    kernel: [3, 3],
                    stride: 2,
                    pad: [0, 0, 1, 1],
                },
                [2, 9, 8],
            ),
            (70, ConvGeometry::square(3, 1, 1), [1, 13, 11]),
        ];
        for (cout, g, [b, h, w]) in cases {
            let [kh, kw] = g.kernel;
            // 3 input channels give K = 27 (buffer only, scalar weight loads in the tiled
            // kernel); 4 give a multiple of 4 (both layouts).
            for cin in [3, 4] {
                let k = cin * kh * kw;
                for (dtype, layout, variant) in [DType::F32, DType::F16, DType::BF16]
                    .into_iter()
                    .flat_map(|d| layouts(k).into_iter().map(move |l| (d, l)))
                    .flat_map(|(d, l)| conv_variants(l).into_iter().map(move |v| (d, l, v)))
                {
                    gpu.force_variant(variant);
                    let x = randn(&mut r, b * cin * h * w, 1.0);
                    let (wt, wr) =
                        matrix(&gpu, cout, k, &randn(&mut r, cout * k, 0.5), dtype, layout);
                    let bias = randn(&mut r, cout, 0.5);
                    let y = ops::conv::conv2d(
                        &gpu,
                        &Tensor::from_f32(&gpu, &[b, cin, h, w], &x).unwrap(),
                        &wt,
                        Some(&Tensor::from_f32(&gpu, &[cout], &bias).unwrap()),
                        g,
                    )
                    .unwrap();
                    let (want, oh, ow) = cpu::conv2d(
                        &x,
                        &wr,
                        Some(&bias),
                        [b, cin, h, w],
                        [cout, kh, kw],
                        g.stride,
                        g.pad,
                    );
                    assert_eq!(y.shape(), [b, cout, oh, ow]);
                    let what = format!(
                        "conv {kh}x{kw} s{} {:?} cin {cin} cout {cout} {dtype} {layout:?} {variant:?}",
                        g.stride, g.pad
                    );
                    assert_close(&what, &gpu, &y.to_vec(&gpu).unwrap(), &want, F32_TOL);
                }
            }
        }
        gpu.force_variant::<BufferConv>(None);
    }
}

#[test]
fn upsample_patchify_concat_crop() {
    let mut r = rng("layout");
    for gpu in gpus() {
        let (b, c, h, w) = (2, 3, 6, 10);
        let x = randn(&mut r, b * c * h * w, 1.0);
        let xt = Tensor::from_f32(&gpu, &[b, c, h, w], &x).unwrap();
        let up = ops::resample::upsample_nearest2x(&gpu, &xt).unwrap();
        assert_close(
            "upsample",
            &gpu,
            &up.to_vec(&gpu).unwrap(),
            &cpu::upsample_nearest2x(&x, h, w),
            0.0,
        );
        // Per-float kernel (3 channels, width 10), then the vec4 one (8 channels, width 12).
        for (c, w) in [(3, 10), (8, 12)] {
            let x = randn(&mut r, b * c * h * w, 1.0);
            let xt = Tensor::from_f32(&gpu, &[b, c, h, w], &x).unwrap();
            for order in [PatchOrder::ChannelFirst, PatchOrder::ChannelLast] {
                let label = format!("{c} channels, width {w}, {order:?}");
                let t = ops::layout::patchify(&gpu, &xt, 2, order).unwrap();
                assert_eq!(t.shape(), [b, 3 * w / 2, 4 * c]);
                assert_close(
                    &format!("patchify {label}"),
                    &gpu,
                    &t.to_vec(&gpu).unwrap(),
                    &cpu::patchify(&x, [b, c, h, w], 2, order),
                    0.0,
                );
                let back = ops::layout::unpatchify(&gpu, &t, c, h, w, 2, order).unwrap();
                let label = format!("unpatchify {label}");
                assert_close(&label, &gpu, &back.to_vec(&gpu).unwrap(), &x, 0.0);
            }
        }
        let a = randn(&mut r, 2 * 3 * 5, 1.0);
        let bb = randn(&mut r, 2 * 4 * 5, 1.0);
        let at = Tensor::from_f32(&gpu, &[2, 3, 5], &a).unwrap();
        let bt = Tensor::from_f32(&gpu, &[2, 4, 5], &bb).unwrap();
        let joined = ops::layout::concat_tokens(&gpu, &at, &bt).unwrap();
        assert_close(
            "concat",
            &gpu,
            &joined.to_vec(&gpu).unwrap(),
            &cpu::concat_tokens(&a, &bb, 2, 5),
            0.0,
        );
        let stacked = ops::layout::concat_batch(&gpu, &at, &at).unwrap();
        assert_eq!(stacked.shape(), [4, 3, 5]);
        let picked = ops::layout::gather_batch(&gpu, &stacked, &[3, 0, 3]).unwrap();
        let all = stacked.to_vec(&gpu).unwrap();
        let want: Vec<f32> = [3, 0, 3]
            .iter()
            .flat_map(|&i| all[i * 15..(i + 1) * 15].to_vec())
            .collect();
        assert_close(
            "concat_batch + gather_batch",
            &gpu,
            &picked.to_vec(&gpu).unwrap(),
            &want,
            0.0,
        );
        assert_eq!(&all[..30], &a[..]);
        assert_eq!(&all[30..], &a[..]);
        assert!(ops::layout::gather_batch(&gpu, &stacked, &[4]).is_err());
        let (p, q) = ops::layout::split_tokens(&gpu, &joined, 3).unwrap();
        assert_close("split first", &gpu, &p.to_vec(&gpu).unwrap(), &a, 0.0);
        assert_close("split second", &gpu, &q.to_vec(&gpu).unwrap(), &bb, 0.0);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            // D = 70 so crop rows start at offsets that are not binding-aligned.
            let (gt, grid) = weight(&gpu, &[1, 49, 70], &randn(&mut r, 49 * 70, 1.0), dtype);
            let crop = ops::layout::crop_grid(&gpu, &gt, 7, 2, 1, 3, 5).unwrap();
            assert_close(
                &format!("crop_grid {dtype}"),
                &gpu,
                &crop.to_vec(&gpu).unwrap(),
                &cpu::crop_grid(&grid, 70, 7, 2, 1, 3, 5),
                0.0,
            );
        }
        let gt = Tensor::from_f32(&gpu, &[49, 3], &[0.0; 147]).unwrap();
        assert!(ops::layout::crop_grid(&gpu, &gt, 7, 5, 0, 3, 5).is_err());
        assert!(
            ops::layout::patchify(
                &gpu,
                &Tensor::from_f32(&gpu, &[1, 1, 3, 4], &[0.0; 12]).unwrap(),
                2,
                PatchOrder::ChannelFirst
            )
            .is_err()
        );
    }
}

#[test]
fn euler_cfg_squared_error_and_elementwise() {
    let mut r = rng("sampler_ops");
    for gpu in gpus() {
        // 480 elements take the vec4 kernels, 90 the scalar ones (and 45 per cfg half).
        for shape in [[2, 16, 5, 3], [2, 3, 5, 3]] {
            let n: usize = shape.iter().product();
            let x = randn(&mut r, n, 1.0);
            let v = randn(&mut r, n, 1.0);
            let xt = Tensor::from_f32(&gpu, &shape, &x).unwrap();
            let vt = Tensor::from_f32(&gpu, &shape, &v).unwrap();
            ops::euler::euler_step(&gpu, &xt, &vt, -0.137).unwrap();
            let want: Vec<f32> = x
                .iter()
                .zip(&v)
                .map(|(a, b)| (f64::from(*a) - 0.137 * f64::from(*b)) as f32)
                .collect();
            assert_close(
                &format!("euler {shape:?}"),
                &gpu,
                &xt.to_vec(&gpu).unwrap(),
                &want,
                F32_TOL,
            );

            let guided = ops::euler::cfg_combine(&gpu, &vt, 4.5).unwrap();
            assert_eq!(guided.shape()[1..], shape[1..]);
            let half = n / 2;
            let want: Vec<f32> = (0..half)
                .map(|i| {
                    (f64::from(v[i]) + 4.5 * (f64::from(v[half + i]) - f64::from(v[i]))) as f32
                })
                .collect();
            assert_close(
                &format!("cfg {shape:?}"),
                &gpu,
                &guided.to_vec(&gpu).unwrap(),
                &want,
                F32_TOL,
            );
        }

        // 6 rows (3 candidates x 2 samples), targets repeat per sample; groups of 1 and of 2 rows.
        // 301 columns take the scalar kernel, 300 the vec4 one.
        for cols in [301, 300] {
            let a = randn(&mut r, 6 * cols, 1.0);
            let t = randn(&mut r, 2 * cols, 1.0);
            let at = Tensor::from_f32(&gpu, &[6, cols], &a).unwrap();
            let tt = Tensor::from_f32(&gpu, &[2, cols], &t).unwrap();
            for group in [1, 2, 3] {
                let got = ops::reduce::squared_error_groups(&gpu, &at, &tt, group)
                    .unwrap()
                    .to_vec(&gpu)
                    .unwrap();
                let want: Vec<f32> = cpu::squared_error_groups(&a, &t, cols, group)
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                assert_close(
                    &format!("squared_error {cols} columns, groups of {group}"),
                    &gpu,
                    &got,
                    &want,
                    F32_TOL,
                );
                let again = ops::reduce::squared_error_groups(&gpu, &at, &tt, group)
                    .unwrap()
                    .to_vec(&gpu)
                    .unwrap();
                assert_eq!(got, again, "reduction is deterministic");
            }
            assert!(ops::reduce::squared_error_groups(&gpu, &at, &tt, 4).is_err());
        }

        let v = randn(&mut r, 90, 1.0);
        let vt = Tensor::from_f32(&gpu, &[2, 3, 5, 3], &v).unwrap();
        let bias = randn(&mut r, 3, 1.0);
        let bt = Tensor::from_f32(&gpu, &[3], &bias).unwrap();
        let sum = ops::elementwise::add(&gpu, &vt, &bt).unwrap();
        let want: Vec<f32> = v.iter().enumerate().map(|(i, a)| a + bias[i % 3]).collect();
        assert_close(
            "add broadcast",
            &gpu,
            &sum.to_vec(&gpu).unwrap(),
            &want,
            F32_TOL,
        );
        let prod = ops::elementwise::mul(&gpu, &vt, &bt).unwrap();
        let want: Vec<f32> = v.iter().enumerate().map(|(i, a)| a * bias[i % 3]).collect();
        assert_close(
            "mul broadcast",
            &gpu,
            &prod.to_vec(&gpu).unwrap(),
            &want,
            F32_TOL,
        );
        for dtype in [DType::F16, DType::BF16] {
            let (wt, wr) = weight(&gpu, &[7], &randn(&mut r, 7, 3.0), dtype);
            let wide = ops::elementwise::to_f32(&gpu, &wt).unwrap();
            assert_eq!(wide.dtype(), DType::F32);
            assert_close(
                &format!("widen {dtype}"),
                &gpu,
                &wide.to_vec(&gpu).unwrap(),
                &wr,
                0.0,
            );
        }
    }
}

#[test]
fn timestep_features_match_f64_formula() {
    let f = ops::embed::timestep_features(&[999.123, 0.5], 8, 10000.0);
    assert_eq!(f.len(), 16);
    // Row 0, i = 1 of 4: freq = 10000^(-1/4) = 0.1.
    let arg = 999.123f64 * 0.1;
    assert!((f64::from(f[1]) - arg.cos()).abs() < 1e-7);
    assert!((f64::from(f[5]) - arg.sin()).abs() < 1e-7);
    assert!((f64::from(f[8]) - 0.5f64.cos()).abs() < 1e-7);
}

#[test]
fn softmax_transpose_and_row_copies() {
    let mut r = rng("softmax");
    for mut gpu in gpus() {
        // Rows shorter and longer than a workgroup, scores large enough that exp() would
        // overflow without the running max; then rows split over bindings of 1 KiB (aligned
        // ranges of whole rows: 64 rows of 40 floats are 10 KiB).
        for (rows, cols, scale, limit) in [
            (3, 5, 1.0, None),
            (7, 300, 30.0, None),
            (64, 40, 0.5, Some(1024)),
        ] {
            let full = gpu.limits.max_storage_buffer_binding_size;
            if let Some(l) = limit {
                gpu.limits.max_storage_buffer_binding_size = l;
            }
            let x = randn(&mut r, rows * cols, 4.0);
            let xt = Tensor::from_f32(&gpu, &[rows, cols], &x).unwrap();
            ops::softmax::softmax_rows(&gpu, &xt, scale).unwrap();
            gpu.limits.max_storage_buffer_binding_size = full;
            let want = cpu::softmax_rows(&x, cols, f64::from(scale));
            let what = format!("softmax {rows}x{cols} scale {scale} binding {limit:?}");
            // f32 rounds a score s by |s| 6e-8, which exp() turns into a relative error.
            let largest = x
                .iter()
                .fold(0.0f64, |m, v| m.max(f64::from(*v * scale).abs()));
            let tol = 1e-6 + 2e-8 * largest;
            assert_close(&what, &gpu, &xt.to_vec(&gpu).unwrap(), &want, tol);
        }
        let (b, rr, c) = (2, 7, 5);
        let x = randn(&mut r, b * rr * c, 1.0);
        let y = ops::elementwise::affine(
            &gpu,
            &Tensor::from_f32(&gpu, &[b, rr, c], &x).unwrap(),
            0.7,
            -0.2,
        )
        .unwrap();
        let want: Vec<f32> = x
            .iter()
            .map(|v| (0.7 * f64::from(*v) - 0.2) as f32)
            .collect();
        assert_close("affine", &gpu, &y.to_vec(&gpu).unwrap(), &want, F32_TOL);
        let xt = Tensor::from_f32(&gpu, &[b, rr, c], &x).unwrap();
        let t = ops::layout::transpose(&gpu, &xt).unwrap();
        assert_eq!(t.shape(), [b, c, rr]);
        let want = cpu::transpose(&x, b, rr, c);
        assert_close("transpose", &gpu, &t.to_vec(&gpu).unwrap(), &want, 0.0);
        // Rows 2..5 of a [6, 3, 4] tensor, and back into a poisoned one.
        let x = randn(&mut r, 72, 1.0);
        let xt = Tensor::from_f32(&gpu, &[6, 3, 4], &x).unwrap();
        let part = ops::layout::take_rows(&gpu, &xt, 2..5).unwrap();
        assert_close(
            "take_rows",
            &gpu,
            &part.to_vec(&gpu).unwrap(),
            &x[24..60],
            0.0,
        );
        let dst = Tensor::empty(&gpu, &[4, 3, 4], DType::F32).unwrap();
        ops::layout::put_rows(&gpu, &dst, 1, &part).unwrap();
        let back = dst.to_vec(&gpu).unwrap();
        assert_eq!(back[12..48], x[24..60]);
        assert!(
            back[..12].iter().all(|v| v.is_nan()),
            "rows outside untouched"
        );
        assert!(ops::layout::put_rows(&gpu, &dst, 2, &part).is_err());
        assert!(ops::layout::take_rows(&gpu, &xt, 4..7).is_err());
    }
}

/// Single-head attention with a head dim past the fused kernels' (the VAE's, up to 512), as
/// matmuls against activations used as matrices: S = q K^T, softmax, O = P V with V as [D, L].
#[test]
fn attention_from_matmuls_over_activation_matrices() {
    let mut r = rng("attention_matmuls");
    for gpu in gpus() {
        for (lq, lk, d) in [(5, 9, 260), (37, 30, 8)] {
            let q = randn(&mut r, lq * d, 1.0);
            let k = randn(&mut r, lk * d, 1.0);
            let v = randn(&mut r, lk * d, 1.0);
            let vt = cpu::transpose(&v, 1, lk, d);
            let scale = 1.0 / (d as f32).sqrt();
            let qt = Tensor::from_f32(&gpu, &[lq, d], &q).unwrap();
            let km = Matrix::from_tensor(Tensor::from_f32(&gpu, &[lk, d], &k).unwrap()).unwrap();
            let vm = Matrix::from_tensor(Tensor::from_f32(&gpu, &[d, lk], &vt).unwrap()).unwrap();
            let s = ops::matmul::linear(&gpu, &qt, &km, None, Act::None).unwrap();
            ops::softmax::softmax_rows(&gpu, &s, scale).unwrap();
            let o = ops::matmul::linear(&gpu, &s, &vm, None, Act::None).unwrap();
            let kv: Vec<f32> = (0..lk)
                .flat_map(|i| k[i * d..(i + 1) * d].iter().chain(&v[i * d..(i + 1) * d]))
                .copied()
                .collect();
            let want = cpu::attention(
                &cpu::Rows {
                    data: &q,
                    len: lq,
                    stride: d,
                },
                0,
                &[(
                    &cpu::Rows {
                        data: &kv,
                        len: lk,
                        stride: 2 * d,
                    },
                    0,
                    d,
                )],
                1,
                1,
                d,
                f64::from(scale),
            );
            let what = format!("attention from matmuls lq {lq} lk {lk} d {d}");
            assert_close(&what, &gpu, &o.to_vec(&gpu).unwrap(), &want, 5e-6);
        }
        let t = Tensor::from_f32(&gpu, &[2, 2, 2], &[0.0; 8]).unwrap();
        assert!(Matrix::from_tensor(t).is_err());
    }
}
