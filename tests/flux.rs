//! The FLUX.1 transformer against diffusers' FluxTransformer2DModel (float64 references from
//! tests/fixtures/make_flux_fixtures.py): one forward with per-row timesteps and a 4-step Euler
//! run, batch 2, non-square, FLUX.1-dev (guidance embedding, dynamic shift) and schnell, in the
//! diffusers and the original key formats, on every adapter; and FLUX's sigmas against the
//! scheduler's.

mod common;

use common::*;
use noiseshift::models::flux::Flux;
use noiseshift::schedule::{DynamicShift, flux_sigmas};
use noiseshift::weights::{ModelPath, WeightSet};
use noiseshift_kernels::Gpu;

fn flux_dir() -> std::path::PathBuf {
    fixtures().join("flux")
}

/// `model` is a pipeline folder under fixtures/flux, or a single file there read with the
/// folder's transformer config (the tiny heads are not FLUX.1's 128, so the RoPE split
/// cannot be inferred: exactly what `--config` is for).
fn load(gpu: &Gpu, model: &str, config_of: &str) -> Flux<'static> {
    let path = ModelPath::resolve(&flux_dir().join(model)).unwrap();
    let weights = Box::leak(Box::new(WeightSet::open(&path.transformer_files).unwrap()));
    let config = ModelPath::resolve(&flux_dir().join(config_of))
        .unwrap()
        .config;
    Flux::load(gpu, weights, config.as_ref(), false).unwrap()
}

fn guidance(case: &str) -> f64 {
    let text = std::fs::read_to_string(flux_dir().join(case).join("case.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["guidance"].as_f64().unwrap_or(f64::NAN)
}

fn forward(model: &str, case: &str) {
    for gpu in all_gpus() {
        let m = load(&gpu, model, case);
        let t = read(&flux_dir().join(case).join("forward.safetensors"));
        let sigmas: Vec<f64> = t["sigmas"].data.iter().map(|&s| f64::from(s)).collect();
        let text = text(&gpu, &t["prompt_embeds"], &t["pooled_prompt_embeds"]);
        let latents = t["latents"].upload(&gpu).unwrap();
        let v = m
            .forward(&gpu, &latents, &sigmas, &text, guidance(case))
            .unwrap();
        assert_eq!(v.shape(), &t["velocity"].shape[..]);
        assert_max_rel(
            &format!("{model} forward on {}", gpu.adapter.label()),
            &v.to_vec(&gpu).unwrap(),
            &t["velocity"].data,
            1e-4,
        );
    }
}

/// Euler steps x += (sigma_{i+1} - sigma_i) v(x, sigma_i) from `latents` (batch 2).
fn euler(
    gpu: &Gpu,
    m: &Flux<'_>,
    latents: &noiseshift::tensor_file::HostTensor,
    sigmas: &[f64],
    text: &noiseshift::models::joint::TextConditioning,
    guidance: f64,
) -> noiseshift_kernels::Tensor {
    let x = latents.upload(gpu).unwrap();
    for i in 0..sigmas.len() - 1 {
        let v = m.forward(gpu, &x, &[sigmas[i]; 2], text, guidance).unwrap();
        let dt = (sigmas[i + 1] - sigmas[i]) as f32;
        noiseshift_kernels::ops::euler::euler_step(gpu, &x, &v, dt).unwrap();
    }
    x
}

/// Four Euler steps x += (sigma_{i+1} - sigma_i) v(x, sigma_i), the sigmas ours (checked
/// against the recorded ones first).
fn sample(model: &str, case: &str) {
    let t = read(&flux_dir().join(case).join("sample.safetensors"));
    let [_, _, h, w] = t["latents"].shape[..] else {
        panic!("latents shape")
    };
    let path = ModelPath::resolve(&flux_dir().join(case)).unwrap();
    let mu = path
        .scheduler
        .as_ref()
        .and_then(DynamicShift::from_config)
        .map(|d| d.mu(8 * w, 8 * h));
    let sigmas = flux_sigmas(4, mu, 1.0);
    for (ours, theirs) in sigmas.iter().zip(&t["sigmas"].data) {
        assert!((ours - f64::from(*theirs)).abs() < 1e-7, "{sigmas:?}");
    }
    for gpu in all_gpus() {
        let m = load(&gpu, model, case);
        let text = text(&gpu, &t["prompt_embeds"], &t["pooled_prompt_embeds"]);
        let x = euler(&gpu, &m, &t["latents"], &sigmas, &text, guidance(case));
        assert_max_rel(
            &format!("{model} 4 steps on {}", gpu.adapter.label()),
            &x.to_vec(&gpu).unwrap(),
            &t["final"].data,
            1e-3,
        );
    }
}

#[test]
fn dev_forward_diffusers_format() {
    forward("dev-tiny", "dev-tiny");
}

#[test]
fn dev_forward_original_format() {
    forward("dev-tiny-single.safetensors", "dev-tiny");
}

#[test]
fn schnell_forward_both_formats() {
    forward("schnell-tiny", "schnell-tiny");
    forward("schnell-tiny-single.safetensors", "schnell-tiny");
}

#[test]
fn dev_four_steps_dynamic_shift_and_guidance() {
    sample("dev-tiny", "dev-tiny");
    sample("dev-tiny-single.safetensors", "dev-tiny");
}

#[test]
fn schnell_four_steps() {
    sample("schnell-tiny-single.safetensors", "schnell-tiny");
}

#[test]
fn sigmas_match_the_scheduler_for_every_size() {
    let text = std::fs::read_to_string(flux_dir().join("sigmas.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let n = case["steps"].as_u64().unwrap() as usize;
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let mu = case["mu"].as_f64();
        if let Some(mu) = mu {
            let ours = DynamicShift::FLUX.mu(w, h);
            assert!((ours - mu).abs() < 1e-12, "{w}x{h}: mu {ours} vs {mu}");
        }
        let want: Vec<f64> = case["sigmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = flux_sigmas(n, mu, 1.0);
        assert_eq!(got.len(), want.len());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("{w}x{h} N={n} mu={mu:?}: max |ours - diffusers| = {err:.1e}");
        assert!(err == 0.0, "{w}x{h} N={n}: {got:?} vs {want:?}");
    }
}

#[test]
fn inferred_head_dim_other_than_128_asks_for_the_config() {
    let gpu = gpu();
    let path = ModelPath::resolve(&flux_dir().join("dev-tiny-single.safetensors")).unwrap();
    let weights = WeightSet::open(&path.transformer_files).unwrap();
    let err = Flux::load(&gpu, &weights, None, false)
        .err()
        .expect("an error");
    let msg = err.to_string();
    assert!(
        msg.contains("--config") && msg.contains("axes_dims_rope"),
        "{msg}"
    );
}

#[test]
fn streamed_blocks_give_the_same_latents_bit_for_bit() {
    let t = read(&flux_dir().join("dev-tiny/sample.safetensors"));
    let path = ModelPath::resolve(&flux_dir().join("dev-tiny")).unwrap();
    let weights = WeightSet::open(&path.transformer_files).unwrap();
    for gpu in all_gpus() {
        let run = |stream: bool| {
            let m = Flux::load(&gpu, &weights, path.config.as_ref(), stream).unwrap();
            let text = text(&gpu, &t["prompt_embeds"], &t["pooled_prompt_embeds"]);
            let sigmas = flux_sigmas(4, Some(0.4), 1.0);
            euler(&gpu, &m, &t["latents"], &sigmas, &text, 3.5)
                .to_vec(&gpu)
                .unwrap()
        };
        let (resident, streamed) = (run(false), run(true));
        assert!(
            resident
                .iter()
                .zip(&streamed)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "streamed blocks changed the latents on {}",
            gpu.adapter.label()
        );
    }
}
