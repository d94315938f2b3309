//! The text encoders at full size with random f16 weights: CLIP-L/14 (12 x 768), OpenCLIP
//! bigG/14 (32 x 1280) and T5-XXL (d_model 4096, 64 heads, d_ff 10240), one prompt and its
//! negative (batch 2) as `generate` runs them: upload and encode seconds, achieved GFLOP/s, and
//! peak device memory, with the weights resident and streamed layer by layer. T5 runs
//! NOISESHIFT_BENCH_T5_LAYERS blocks (default 2; 24 in the real model) and is scaled to 24.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{gpu, write_random};
use noiseshift::models::clip::{ClipConfig, ClipText};
use noiseshift::models::t5::{T5Config, T5Encoder};
use noiseshift::weights::WeightSet;
use noiseshift_kernels::Gpu;
use noiseshift_kernels::ops::Act;

fn bench_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-models")
        .join(name)
}

struct Clip {
    name: &'static str,
    width: usize,
    layers: usize,
    heads: usize,
    act: &'static str,
}

fn clip_checkpoint(c: &Clip) -> PathBuf {
    let dir = bench_dir(c.name);
    let file = dir.join("model.safetensors");
    if file.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let (d, ff) = (c.width, 4 * c.width);
    let mut t: Vec<(String, Vec<usize>)> = vec![
        (
            "text_model.embeddings.token_embedding.weight".into(),
            vec![49408, d],
        ),
        (
            "text_model.embeddings.position_embedding.weight".into(),
            vec![77, d],
        ),
        ("text_model.final_layer_norm.weight".into(), vec![d]),
        ("text_model.final_layer_norm.bias".into(), vec![d]),
        ("text_projection.weight".into(), vec![d, d]),
    ];
    for i in 0..c.layers {
        let n = |s: &str| format!("text_model.encoder.layers.{i}.{s}");
        for (name, out, inp) in [
            ("self_attn.q_proj", d, d),
            ("self_attn.k_proj", d, d),
            ("self_attn.v_proj", d, d),
            ("self_attn.out_proj", d, d),
            ("mlp.fc1", ff, d),
            ("mlp.fc2", d, ff),
        ] {
            t.push((n(&format!("{name}.weight")), vec![out, inp]));
            t.push((n(&format!("{name}.bias")), vec![out]));
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            t.push((n(&format!("{norm}.weight")), vec![d]));
            t.push((n(&format!("{norm}.bias")), vec![d]));
        }
    }
    write_random(&file, t);
    let config = serde_json::json!({
        "vocab_size": 49408, "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads, "max_position_embeddings": 77, "hidden_act": c.act,
        "layer_norm_eps": 1e-5, "eos_token_id": 2, "projection_dim": d
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn t5_checkpoint(layers: usize) -> PathBuf {
    let dir = bench_dir(&format!("t5-xxl-random-{layers}"));
    let file = dir.join("model.safetensors");
    if file.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let (d, inner, ff) = (4096, 4096, 10240);
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("shared.weight".into(), vec![32128, d]),
        ("encoder.final_layer_norm.weight".into(), vec![d]),
        (
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".into(),
            vec![32, 64],
        ),
    ];
    for i in 0..layers {
        let n = |s: &str| format!("encoder.block.{i}.{s}");
        for (name, shape) in [
            ("layer.0.SelfAttention.q.weight", vec![inner, d]),
            ("layer.0.SelfAttention.k.weight", vec![inner, d]),
            ("layer.0.SelfAttention.v.weight", vec![inner, d]),
            ("layer.0.SelfAttention.o.weight", vec![d, inner]),
            ("layer.0.layer_norm.weight", vec![d]),
            ("layer.1.DenseReluDense.wi_0.weight", vec![ff, d]),
            ("layer.1.DenseReluDense.wi_1.weight", vec![ff, d]),
            ("layer.1.DenseReluDense.wo.weight", vec![d, ff]),
            ("layer.1.layer_norm.weight", vec![d]),
        ] {
            t.push((n(name), shape));
        }
    }
    write_random(&file, t);
    dir
}

/// Ids of two prompts of `len` tokens, the largest id (CLIP's end token) at position 12.
fn ids(len: usize, vocab: u32) -> Vec<Vec<u32>> {
    (0..2)
        .map(|r| {
            (0..len)
                .map(|i| match i {
                    12 => vocab - 1,
                    _ => (i as u32 * 7919 + r * 104_729) % (vocab - 2),
                })
                .collect()
        })
        .collect()
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Upload and encode twice (the first run compiles the kernels) and print the second: `run`
/// returns its upload and encode seconds; `scale` multiplies both (layers measured -> all).
fn measure(gpu: &Gpu, what: &str, flops: f64, scale: f64, mut run: impl FnMut() -> (f64, f64)) {
    run();
    gpu.trim_memory();
    gpu.reset_peak_memory();
    let (load, encode) = run();
    let peak = gpu.memory().peak_bytes;
    println!(
        "{what:<40} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        load * scale,
        encode * scale,
        flops / (load + encode) / 1e9,
        gib(peak)
    );
}

/// Seconds since `start`, restarting it.
fn lap(start: &mut Instant) -> f64 {
    let s = start.elapsed().as_secs_f64();
    *start = Instant::now();
    s
}

fn main() {
    let gpu = gpu();
    println!("text encoders on {}", gpu.adapter.label());
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>9}",
        "case (batch 2)", "upload s", "encode s", "GFLOP/s", "peak GiB"
    );
    for c in [
        Clip {
            name: "clip-l-random",
            width: 768,
            layers: 12,
            heads: 12,
            act: "quick_gelu",
        },
        Clip {
            name: "clip-g-random",
            width: 1280,
            layers: 32,
            heads: 20,
            act: "gelu",
        },
    ] {
        let dir = clip_checkpoint(&c);
        let w = WeightSet::open(&[dir.join("model.safetensors")]).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let tokens = 2 * 77;
        let params = 12 * c.width * c.width * c.layers;
        let flops = 2.0 * (tokens * params) as f64;
        for stream in [false, true] {
            measure(
                &gpu,
                &format!(
                    "{} {}",
                    c.name,
                    if stream { "streamed" } else { "resident" }
                ),
                flops,
                1.0,
                || {
                    let mut t = Instant::now();
                    let config =
                        ClipConfig::resolve(&w, "", Some(&json), Act::QuickGelu, 0).unwrap();
                    let model = ClipText::load(&gpu, &w, "", config, stream).unwrap();
                    let load = lap(&mut t);
                    model.forward(&gpu, &ids(77, 49408), |_| Ok(())).unwrap();
                    gpu.finish().unwrap();
                    (load, lap(&mut t))
                },
            );
        }
    }
    let layers: usize = std::env::var("NOISESHIFT_BENCH_T5_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = t5_checkpoint(layers);
    let w = WeightSet::open(&[dir.join("model.safetensors")]).unwrap();
    let tokens = 2 * 256;
    let per_layer = 4 * 4096 * 4096 + 3 * 4096 * 10240;
    let flops = 2.0 * (tokens * per_layer * layers) as f64;
    for stream in [false, true] {
        measure(
            &gpu,
            &format!(
                "t5-xxl x{layers} layers {} (s x 24/{layers})",
                if stream { "streamed" } else { "resident" }
            ),
            flops,
            24.0 / layers as f64,
            || {
                let mut t = Instant::now();
                let config = T5Config::resolve(&w, "", None).unwrap();
                let model = T5Encoder::load(&gpu, &w, "", config, stream).unwrap();
                let load = lap(&mut t);
                model.forward(&gpu, &ids(256, 32128), |_| Ok(())).unwrap();
                gpu.finish().unwrap();
                (load, lap(&mut t))
            },
        );
    }
    println!(
        "streamed: layers upload during the encode (the upload column is the rest); GFLOP/s over \
         upload + encode; peak memory is the pool's (weights + activations), unscaled"
    );
}
