//! Calibration throughput on the SD3-medium shape (random f16 weights) at 128x128 (and 256x256
//! with NOISESHIFT_BENCH_256=1): sample evaluations per second with all candidates of a stage
//! in one batch against one candidate per forward, the ratio, the evaluations of a full default
//! calibration (28 steps, 200 samples) and its projected time on this adapter.
//! NOISESHIFT_BENCH_SAMPLES=N (default 1) sets the samples per stage, so that a GPU sees
//! batches of its size.

mod common;

use common::{gpu, sd3_medium_random, warm_up};
use noiseshift::models::transformer::{Placement, Transformer};
use noiseshift::noiseshift::search::{Engine, Memo, SearchConfig, VelocityModel};
use noiseshift::noiseshift::velocity::TransformerVelocity;
use noiseshift::schedule::sd3_sigmas;
use noiseshift::tensor_file::HostTensor;
use noiseshift::weights::{ModelPath, WeightSet};

fn noise(shape: &[usize], seed: u32) -> HostTensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5)
                * 2.0
        })
        .collect();
    HostTensor::new(shape.to_vec(), data)
}

fn main() {
    let gpu = gpu();
    let path = ModelPath::resolve(&sd3_medium_random()).unwrap();
    let weights = WeightSet::open(&path.transformer_files).unwrap();
    let model =
        Transformer::load(&gpu, &weights, path.config.as_ref(), Placement::RESIDENT).unwrap();
    let samples: usize = std::env::var("NOISESHIFT_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let velocity = TransformerVelocity::new(
        &model,
        noise(&[samples, 333, 4096], 1),
        noise(&[samples, 2048], 2),
        None,
        1.0,
    );
    // A small stage: 3 coarse and 3 fine candidates (the default grid has 21 + 21).
    let config = |batch| SearchConfig {
        sigmas: sd3_sigmas(28, 3.0),
        coarse_window: 0.01,
        coarse_stride: 0.01,
        fine_window: 0.001,
        fine_stride: 0.001,
        widen: false,
        adaptive: None,
        batch,
        bootstrap: 0,
        seed: 0,
    };
    println!("adapter: {}", gpu.adapter.label());
    let mut sizes = vec![128];
    if std::env::var_os("NOISESHIFT_BENCH_256").is_some() {
        sizes.push(256);
    }
    for px in sizes {
        let lat = px / 8;
        let (x0, eps) = (
            noise(&[samples, 16, lat, lat], 3),
            noise(&[samples, 16, lat, lat], 4),
        );
        // Builds the pipelines and brings a GPU to its clock (one row at a time); not timed.
        let row = noise(&[1, 16, lat, lat], 5).upload(&gpu).unwrap();
        warm_up(&gpu, &mut || {
            velocity.velocity(&gpu, &row, &[0.5], &[0]).unwrap();
        });
        let mut rates = Vec::new();
        for (label, batch) in [
            ("all candidates per forward", 3 * samples),
            ("one candidate per forward", samples),
        ] {
            let engine =
                Engine::new(&gpu, &velocity, x0.clone(), eps.clone(), config(batch)).unwrap();
            let start = std::time::Instant::now();
            let r = engine
                .step(5, &[], &mut Memo::default(), &mut |_, _| Ok(()))
                .unwrap();
            let secs = start.elapsed().as_secs_f64();
            let rate = r.evaluations as f64 / secs;
            println!(
                "{px}x{px}, {label} ({batch} rows): {} evaluations in {secs:.2} s = {rate:.3} per second",
                r.evaluations
            );
            rates.push(rate);
        }
        println!("{px}x{px}: batching pays {:.2}x", rates[0] / rates[1]);
        // Default search: 21 coarse + 21 fine candidates per step (fewer where clipped).
        let evaluations = 28 * 42 * 200;
        println!(
            "{px}x{px}: full default calibration (28 steps x 42 candidates x 200 samples) = {evaluations} evaluations: projected {} here",
            duration(evaluations as f64 / rates[0])
        );
    }
}

/// Seconds as seconds, minutes or hours, whichever reads best.
fn duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}
