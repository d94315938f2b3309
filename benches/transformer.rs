//! One SD3-medium-shaped transformer forward (24 blocks, hidden 1536, 333 text tokens, random
//! f16 weights) at 128, 256 and 512 px (1024 with NOISESHIFT_BENCH_1024=1): seconds per
//! forward, achieved GFLOP/s, fraction of the matmul throughput measured in the same run, the
//! per-kernel split, and peak device memory (weights + activations).

mod common;

use std::collections::BTreeMap;

use common::{gpu, sd3_medium_random, time};
use noiseshift::models::mmdit::{Mmdit, TextConditioning};
use noiseshift::weights::{ModelPath, WeightSet};
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{DType, Matrix, MatrixLayout, Tensor};

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

    // The matmul ceiling of this run: a 1024^3 product with f16 weights.
    let k = 1024;
    let bytes: Vec<u8> = noise(k * k, 1)
        .iter()
        .flat_map(|v| half::f16::from_f32(*v * 0.03).to_le_bytes())
        .collect();
    let w = Matrix::upload(&gpu, k, k, DType::F16, &[&bytes], MatrixLayout::Auto).unwrap();
    let x = Tensor::from_f32(&gpu, &[k, k], &noise(k * k, 2)).unwrap();
    let secs = time(&gpu, 2, &mut || {
        ops::matmul::linear(&gpu, &x, &w, None, Act::None).unwrap();
    });
    let matmul_ceiling = 2.0 * (k * k * k) as f64 / secs / 1e9;
    println!("matmul ceiling (linear 1024^3, f16 weights): {matmul_ceiling:.2} GFLOP/s");
    drop((w, x));

    let mut sizes = vec![128, 256, 512];
    if std::env::var_os("NOISESHIFT_BENCH_1024").is_some() {
        sizes.push(1024);
    }
    let text = TextConditioning {
        embeds: Tensor::from_f32(&gpu, &[1, 333, 4096], &noise(333 * 4096, 3)).unwrap(),
        pooled: Tensor::from_f32(&gpu, &[1, 2048], &noise(2048, 4)).unwrap(),
    };
    let mut warm = false;
    for px in sizes {
        let lat = px / 8;
        let latents =
            Tensor::from_f32(&gpu, &[1, 16, lat, lat], &noise(16 * lat * lat, 5)).unwrap();
        if !warm {
            // Builds every pipeline once; not timed.
            model.forward(&gpu, &latents, &[0.5], &text).unwrap();
            gpu.finish().unwrap();
            warm = true;
        }
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
        println!(
            "{px}x{px} ({} image + 333 text tokens): {kernel_secs:.2} s per forward in kernels ({wall:.2} s wall), {:.1} TFLOP, \
             {gflops:.2} GFLOP/s = {:.0} % of the matmul ceiling; peak memory {:.2} GiB ({:.2} GiB activations)",
            lat * lat / 4,
            flops / 1e12,
            100.0 * gflops / matmul_ceiling,
            peak as f64 / (1u64 << 30) as f64,
            (peak - weight_bytes) as f64 / (1u64 << 30) as f64
        );
        let parts: Vec<String> = split
            .iter()
            .map(|(k, v)| format!("{k} {:.1} %", 100.0 * v / kernel_secs))
            .collect();
        println!("    split: {}", parts.join(", "));
    }
}
