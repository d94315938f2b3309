//! Kernel bench: ceilings measured in the same run (FMA kernel, copy kernel), then linear at
//! MMDiT shapes (f32 and f16 weights; at 1024^3 also the per-lane texture kernel where the
//! subgroup one is the default, and every kernel for weights in buffers; on hardware GPUs every
//! one of those at the MMDiT shapes too),
//! fused attention, LayerNorm+modulation, a VAE conv, and the same products through a CPU
//! BLAS (matrixmultiply, all cores) for comparison.
//! `cargo bench --bench kernels`; NOISESHIFT_BENCH_QUICK=1 drops the 4429-token cases.

mod common;

use common::{gpu, header, row, time};
use noiseshift_kernels::ops::attention::{KvSource, QuerySource};
use noiseshift_kernels::ops::conv::ConvGeometry;
use noiseshift_kernels::ops::matmul::{BufferLinear, TextureLinear};
use noiseshift_kernels::ops::norm::Modulation;
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{DType, Gpu, Matrix, MatrixLayout, Tensor, ceilings};

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 997) as f32 - 498.0) * 1e-4)
        .collect()
}

fn matrix(gpu: &Gpu, n: usize, k: usize, dtype: DType, layout: MatrixLayout) -> Matrix {
    let v = values(n * k);
    let bytes: Vec<u8> = match dtype {
        DType::F32 => bytemuck::cast_slice(&v).to_vec(),
        _ => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
    };
    Matrix::upload(gpu, n, k, dtype, &[&bytes], layout).unwrap()
}

/// Time the same product through the CPU BLAS and print its row (no GB/s or ceiling: those
/// are the adapter's).
fn cpu_sgemm_row(label: &str, m: usize, n: usize, k: usize) {
    let secs = cpu_sgemm_seconds(m, n, k);
    println!(
        "{:<44} {:>10.2} {:>9.2}",
        format!("CPU sgemm {label}"),
        secs * 1e3,
        2.0 * (m * n * k) as f64 / secs / 1e9
    );
}

fn cpu_sgemm_seconds(m: usize, n: usize, k: usize) -> f64 {
    let a = values(m * k);
    let b = values(n * k);
    let mut c = vec![0.0f32; m * n];
    let mut run = || unsafe {
        // c = a b^T with b stored [n, k] (row stride k, column stride 1 -> transposed view).
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    };
    run();
    let t = std::time::Instant::now();
    run();
    t.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::var_os("NOISESHIFT_BENCH_QUICK").is_some();
    let gpu = gpu();
    let c = ceilings::measure(&gpu).unwrap();
    println!("adapter: {}", gpu.adapter.label());
    println!(
        "ceilings: {:.1} GFLOP/s (FMA kernel), {:.1} GB/s (copy kernel)",
        c.gflops, c.gbps
    );
    header();
    let d = 1536;
    let tokens: &[usize] = if quick { &[400] } else { &[400, 4429] };
    // Best of two timings for every case (one would let a slow moment of the machine through).
    let reps = 2;

    let k = 1024;
    for dtype in [DType::F32, DType::F16] {
        let w = matrix(&gpu, k, k, dtype, MatrixLayout::Auto);
        let x = Tensor::from_f32(&gpu, &[k, k], &values(k * k)).unwrap();
        let secs = time(&gpu, reps, &mut || {
            ops::matmul::linear(&gpu, &x, &w, None, Act::None).unwrap();
        });
        let bytes = (k * k * 8 + k * k * dtype.size()) as f64;
        row(
            &format!("linear 1024^3 {dtype}"),
            secs,
            2.0 * (k * k * k) as f64,
            bytes,
            c,
        );
    }
    cpu_sgemm_row("1024^3 (matrixmultiply)", k, k, k);
    // The texture kernel whose lanes each load their own x rows, where the default is the
    // subgroup one (adapters with subgroups 8 wide).
    if gpu.variant::<TextureLinear>() == TextureLinear::Subgroup {
        gpu.force_variant(Some(TextureLinear::Lanes));
        for dtype in [DType::F32, DType::F16] {
            let w = matrix(&gpu, k, k, dtype, MatrixLayout::Texture);
            let x = Tensor::from_f32(&gpu, &[k, k], &values(k * k)).unwrap();
            let secs = time(&gpu, reps, &mut || {
                ops::matmul::linear(&gpu, &x, &w, None, Act::None).unwrap();
            });
            row(
                &format!("linear 1024^3 {dtype}, texture Lanes"),
                secs,
                2.0 * (k * k * k) as f64,
                (k * k * 8 + k * k * dtype.size()) as f64,
                c,
            );
        }
        gpu.force_variant::<TextureLinear>(None);
    }
    // Every kernel for weights in buffers (hardware GPUs default to Auto: Wide or Tiled by size).
    let default = gpu.variant::<BufferLinear>();
    let mut variants = vec![
        BufferLinear::Blocked,
        BufferLinear::Tiled,
        BufferLinear::Wide,
    ];
    if gpu.caps.coop_f16 {
        variants.push(BufferLinear::Coop);
    }
    for &variant in &variants {
        gpu.force_variant(Some(variant));
        let w = matrix(&gpu, k, k, DType::F16, MatrixLayout::Buffer);
        let x = Tensor::from_f32(&gpu, &[k, k], &values(k * k)).unwrap();
        let secs = time(&gpu, reps, &mut || {
            ops::matmul::linear(&gpu, &x, &w, None, Act::None).unwrap();
        });
        row(
            &format!("linear 1024^3 f16, buffer {variant:?}"),
            secs,
            2.0 * (k * k * k) as f64,
            (k * k * 8 + k * k * 2) as f64,
            c,
        );
    }
    gpu.force_variant(Some(default));
    // At the MMDiT shapes: the default kernel on software adapters, every buffer kernel but
    // Blocked on hardware GPUs (whose Auto rule comes from these rows).
    let shape_variants: Vec<Option<BufferLinear>> = if gpu.caps.software {
        vec![None]
    } else {
        variants[1..].iter().copied().map(Some).collect()
    };

    for &t in tokens {
        let x = Tensor::from_f32(&gpu, &[t, d], &values(t * d)).unwrap();
        for (n, label) in [(d, "1536->1536"), (4 * d, "1536->6144")] {
            for (dtype, variant) in [DType::F32, DType::F16]
                .into_iter()
                .flat_map(|dt| shape_variants.iter().map(move |v| (dt, *v)))
            {
                gpu.force_variant(Some(variant.unwrap_or(default)));
                let w = matrix(&gpu, n, d, dtype, MatrixLayout::Auto);
                let secs = time(&gpu, reps, &mut || {
                    ops::matmul::linear(&gpu, &x, &w, None, Act::None).unwrap();
                });
                let flops = 2.0 * (t * n * d) as f64;
                let bytes = (t * d * 4 + n * d * dtype.size() + t * n * 4) as f64;
                let kernel = variant.map_or_else(String::new, |v| format!(", {v:?}"));
                row(
                    &format!("linear {t} x {label} {dtype}{kernel}"),
                    secs,
                    flops,
                    bytes,
                    c,
                );
            }
            gpu.force_variant(Some(default));
            cpu_sgemm_row(&format!("{t} x {label}"), t, n, d);
        }
        let table = Tensor::from_f32(&gpu, &[1, 6 * d], &values(6 * d)).unwrap();
        let m = Modulation {
            table: &table,
            tokens: t,
            shift: 0,
            scale: 1,
        };
        let secs = time(&gpu, reps, &mut || {
            ops::norm::layer_norm(&gpu, &x, None, None, Some(m), 1e-6).unwrap();
        });
        row(
            &format!("layer_norm+modulate {t} x 1536"),
            secs,
            10.0 * (t * d) as f64,
            8.0 * (t * d) as f64,
            c,
        );
        let secs = time(&gpu, reps, &mut || {
            ops::modulate::modulate(&gpu, &x, m).unwrap();
        });
        row(
            &format!("modulate {t} x 1536"),
            secs,
            2.0 * (t * d) as f64,
            8.0 * (t * d) as f64,
            c,
        );
    }

    let attn_lens: &[usize] = if quick { &[397] } else { &[397, 4429] };
    for &l in attn_lens {
        let (h, hd) = (24, 64);
        let qkv = Tensor::from_f32(&gpu, &[l, 3 * h * hd], &values(l * 3 * h * hd)).unwrap();
        let secs = time(&gpu, reps, &mut || {
            let kv = [KvSource {
                tensor: &qkv,
                len: l,
                k_off: h * hd,
                v_off: 2 * h * hd,
            }];
            ops::attention::attention(
                &gpu,
                QuerySource {
                    tensor: &qkv,
                    len: l,
                    off: 0,
                },
                &kv,
                1,
                h,
                hd,
                0.125,
            )
            .unwrap();
        });
        let flops = 4.0 * (h * l * l * hd) as f64;
        row(
            &format!("attention 24 heads x 64, L = {l}"),
            secs,
            flops,
            (4 * l * h * hd * 4) as f64,
            c,
        );
    }

    // A VAE decoder conv: 3x3, 256 -> 256 channels at 64x64, f16 weights.
    let (ch, s) = (256, 64);
    let img = Tensor::from_f32(&gpu, &[1, ch, s, s], &values(ch * s * s)).unwrap();
    let w = matrix(&gpu, ch, ch * 9, DType::F16, MatrixLayout::Auto);
    let secs = time(&gpu, reps, &mut || {
        ops::conv::conv2d(&gpu, &img, &w, None, ConvGeometry::square(3, 1, 1)).unwrap();
    });
    row(
        "conv2d 3x3 256->256 at 64x64 f16",
        secs,
        2.0 * (ch * ch * 9 * s * s) as f64,
        (2 * ch * s * s * 4) as f64,
        c,
    );
}
