//! One SD3-medium-shaped transformer forward (24 blocks, hidden 1536, 333 text tokens, random
//! f16 weights) at 128, 256 and 512 px (1024 with NOISESHIFT_BENCH_1024=1): seconds per
//! forward, achieved GFLOP/s, fraction of the matmul throughput measured in the same run, the
//! per-kernel split with the six slowest kernels, and peak device memory (weights +
//! activations).

mod common;

use std::collections::BTreeMap;

use common::{gpu, sd3_medium_random, time, warm_up};
use noiseshift::models::joint::TextConditioning;
use noiseshift::models::mmdit::Mmdit;
use noiseshift::weights::{ModelPath, WeightSet};
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{DType, Gpu, Matrix, MatrixLayout, Tensor};

fn noise(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5)
                * 2.0
        })
        .collect()
}

/// Which part of the forward a kernel belongs to.
fn group(name: &str) -> &'static str {
    if name.starts_with("linear") {
        "matmul"
    } else if name.starts_with("attention") {
        "attention"
    } else if name.contains("norm") {
        "norms"
    } else {
        "rest"
    }
}

/// The matmul ceiling of this run: the forward's widest product (tokens x 1536 -> 6144, f16
/// weights) at 2048 rows, enough to fill a GPU. Measured after the forwards, on a GPU already
/// at its clock.
fn matmul_ceiling(gpu: &Gpu) -> f64 {
    let (m, k, n) = (2048, 1536, 6144);
    let bytes: Vec<u8> = noise(n * k, 1)
        .iter()
        .flat_map(|v| half::f16::from_f32(*v * 0.03).to_le_bytes())
        .collect();
    let w = Matrix::upload(gpu, n, k, DType::F16, &[&bytes], MatrixLayout::Auto).unwrap();
    let x = Tensor::from_f32(gpu, &[m, k], &noise(m * k, 2)).unwrap();
    let secs = time(gpu, 2, &mut || {
        ops::matmul::linear(gpu, &x, &w, None, Act::None).unwrap();
    });
    let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
    println!("matmul ceiling (linear {m} x {k} -> {n}, f16 weights): {gflops:.2} GFLOP/s");
    gflops
}

fn main() {
    let gpu = gpu();
    let path = ModelPath::resolve(&sd3_medium_random()).unwrap();
    let weights = WeightSet::open(&path.transformer_files).unwrap();
    let model = Mmdit::load(&gpu, &weights, path.config.as_ref()).unwrap();
    let weight_bytes = gpu.memory().live_bytes;
    println!("adapter: {}", gpu.adapter.label());
    println!(
        "weights on device: {:.2} GiB ({} parameters)",
        weight_bytes as f64 / (1u64 << 30) as f64,
        weights.totals("").0
    );

    let mut sizes = vec![128, 256, 512];
    if std::env::var_os("NOISESHIFT_BENCH_1024").is_some() {
        sizes.push(1024);
    }
    let text = TextConditioning {
        embeds: Tensor::from_f32(&gpu, &[1, 333, 4096], &noise(333 * 4096, 3)).unwrap(),
        pooled: Tensor::from_f32(&gpu, &[1, 2048], &noise(2048, 4)).unwrap(),
    };
    let mut rates = Vec::new();
    for px in sizes {
        let lat = px / 8;
        let latents =
            Tensor::from_f32(&gpu, &[1, 16, lat, lat], &noise(16 * lat * lat, 5)).unwrap();
        // Builds the pipelines and brings a GPU to its clock; not timed.
        warm_up(&gpu, &mut || {
            model.forward(&gpu, &latents, &[0.5], &text).unwrap();
        });
        gpu.trim_memory();
        gpu.reset_peak_memory();
        gpu.profiler().set_enabled(true);
        let start = std::time::Instant::now();
        model.forward(&gpu, &latents, &[0.5], &text).unwrap();
        gpu.finish().unwrap();
        let wall = start.elapsed().as_secs_f64();
        gpu.profiler().set_enabled(false);
        let records = gpu.profiler().take_records();
        let peak = gpu.memory().peak_bytes;
        let kernel_secs: f64 = records.iter().map(|r| r.dur_us * 1e-6).sum();
        let flops: f64 = records.iter().map(|r| r.flops).sum();
        let mut split: BTreeMap<&str, f64> = BTreeMap::new();
        for r in &records {
            *split.entry(group(r.name)).or_default() += r.dur_us * 1e-6;
        }
        let gflops = flops / kernel_secs / 1e9;
        rates.push((px, gflops));
        println!(
            "{px}x{px} ({} image + 333 text tokens): {kernel_secs:.2} s per forward in kernels ({wall:.2} s wall), {:.1} TFLOP, \
             {gflops:.2} GFLOP/s; peak memory {:.2} GiB ({:.2} GiB activations)",
            lat * lat / 4,
            flops / 1e12,
            peak as f64 / (1u64 << 30) as f64,
            (peak - weight_bytes) as f64 / (1u64 << 30) as f64
        );
        let parts: Vec<String> = split
            .iter()
            .map(|(k, v)| format!("{k} {:.1} %", 100.0 * v / kernel_secs))
            .collect();
        println!("    split: {}", parts.join(", "));
        let mut kernels: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for r in &records {
            let k = kernels.entry(r.name).or_default();
            k.0 += r.dur_us * 1e-3;
            k.1 += 1;
        }
        let mut top: Vec<_> = kernels.into_iter().collect();
        top.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        let top: Vec<String> = top
            .iter()
            .take(6)
            .map(|(name, (ms, n))| format!("{name} {ms:.1} ms ({n})"))
            .collect();
        println!("    slowest kernels: {}", top.join(", "));
    }
    let ceiling = matmul_ceiling(&gpu);
    let fractions: Vec<String> = rates
        .iter()
        .map(|(px, g)| format!("{px}x{px} {:.0} %", 100.0 * g / ceiling))
        .collect();
    println!("forwards against it: {}", fractions.join(", "));
}
