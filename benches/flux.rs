//! One FLUX.1-dev-shaped transformer forward (hidden 3072, 24 heads x 128, guidance embedding,
//! random bf16 weights in diffusers names) at 512 x 512 (1024 image tokens) with 512 T5 tokens,
//! batch 1: the blocks resident and streamed from host memory (`--offload on`), seconds,
//! achieved GFLOP/s, the share of the streamed forward spent uploading, and peak device memory.
//! The real model has 19 double- and 38 single-stream blocks; this runs
//! NOISESHIFT_BENCH_FLUX_BLOCKS of each kind (default 1 and 2) and scales the times to 19 + 38.
//! NOISESHIFT_BENCH_FLUX_SIDE sets the image side in pixels (default 512).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{gpu, write_random_as};
use noiseshift::models::flux::Flux;
use noiseshift::models::joint::TextConditioning;
use noiseshift::noise::seeded_noise;
use noiseshift::weights::WeightSet;

const D: usize = 3072;
const T5_TOKENS: usize = 512;

fn checkpoint(double: usize, single: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/bench-models/flux-dev-random-{double}-{single}"
    ));
    let file = dir.join("diffusion_pytorch_model.safetensors");
    if file.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut linear = |name: String, out: usize, inp: usize| {
        t.push((format!("{name}.weight"), vec![out, inp]));
        t.push((format!("{name}.bias"), vec![out]));
    };
    linear("x_embedder".into(), D, 64);
    linear("context_embedder".into(), D, 4096);
    for (what, inp) in [("timestep", 256), ("guidance", 256), ("text", 768)] {
        linear(format!("time_text_embed.{what}_embedder.linear_1"), D, inp);
        linear(format!("time_text_embed.{what}_embedder.linear_2"), D, D);
    }
    linear("norm_out.linear".into(), 2 * D, D);
    linear("proj_out".into(), 64, D);
    for i in 0..double {
        let b = format!("transformer_blocks.{i}");
        linear(format!("{b}.norm1.linear"), 6 * D, D);
        linear(format!("{b}.norm1_context.linear"), 6 * D, D);
        for n in [
            "to_q",
            "to_k",
            "to_v",
            "add_q_proj",
            "add_k_proj",
            "add_v_proj",
            "to_out.0",
            "to_add_out",
        ] {
            linear(format!("{b}.attn.{n}"), D, D);
        }
        for ff in ["ff", "ff_context"] {
            linear(format!("{b}.{ff}.net.0.proj"), 4 * D, D);
            linear(format!("{b}.{ff}.net.2"), D, 4 * D);
        }
    }
    for i in 0..single {
        let b = format!("single_transformer_blocks.{i}");
        linear(format!("{b}.norm.linear"), 3 * D, D);
        for n in ["to_q", "to_k", "to_v"] {
            linear(format!("{b}.attn.{n}"), D, D);
        }
        linear(format!("{b}.proj_mlp"), 4 * D, D);
        linear(format!("{b}.proj_out"), D, 5 * D);
    }
    for i in 0..double {
        for n in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"] {
            t.push((format!("transformer_blocks.{i}.attn.{n}.weight"), vec![128]));
        }
    }
    for i in 0..single {
        for n in ["norm_q", "norm_k"] {
            t.push((
                format!("single_transformer_blocks.{i}.attn.{n}.weight"),
                vec![128],
            ));
        }
    }
    write_random_as(&file, t, true);
    let config = serde_json::json!({
        "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64,
        "num_layers": double, "num_single_layers": single, "attention_head_dim": 128,
        "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
        "guidance_embeds": true, "axes_dims_rope": [16, 56, 56]
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

/// Multiply-adds x 2 of one block's linears over `image` + `text` tokens, and its attention.
fn block_flops(image: usize, text: usize) -> (f64, f64) {
    let tokens = (image + text) as f64;
    let attention = 4.0 * tokens * tokens * D as f64;
    let d2 = (D * D) as f64;
    // Double: per stream qkv 3, proj 1, MLP 8 (in D^2); modulation runs on one vector.
    let double = 2.0 * 12.0 * d2 * tokens + attention;
    // Single: linear1 7, linear2 5.
    let single = 2.0 * 12.0 * d2 * tokens + attention;
    (double, single)
}

fn main() {
    let gpu = gpu();
    let blocks: Vec<usize> = std::env::var("NOISESHIFT_BENCH_FLUX_BLOCKS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    let [double, single] = blocks[..] else {
        panic!("NOISESHIFT_BENCH_FLUX_BLOCKS must be DOUBLE,SINGLE");
    };
    let side: usize = std::env::var("NOISESHIFT_BENCH_FLUX_SIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let dir = checkpoint(double, single);
    let weights = WeightSet::open(&[dir.join("diffusion_pytorch_model.safetensors")]).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let lat = side / 8;
    let image = (lat / 2) * (lat / 2);
    let (fd, fs) = block_flops(image, T5_TOKENS);
    let flops = double as f64 * fd + single as f64 * fs;
    let scale_to_full = (19.0 * fd + 38.0 * fs) / flops;
    println!(
        "FLUX.1-dev-shaped forward on {}: {side}x{side} px ({image} image + {T5_TOKENS} text tokens), \
         {double} double + {single} single blocks ({:.0} GFLOP), times x {scale_to_full:.1} for 19 + 38",
        gpu.adapter.label(),
        flops / 1e9
    );
    let x = seeded_noise(0, &[1, 16, lat, lat]).upload(&gpu).unwrap();
    let text = TextConditioning {
        embeds: seeded_noise(1, &[1, T5_TOKENS, 4096]).upload(&gpu).unwrap(),
        pooled: seeded_noise(2, &[1, 768]).upload(&gpu).unwrap(),
    };
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>9} {:>10}",
        "blocks", "load s", "forward s", "full s", "GFLOP/s", "peak GiB"
    );
    let mut resident_secs = 0.0;
    for stream in [false, true] {
        gpu.trim_memory();
        gpu.reset_peak_memory();
        let start = Instant::now();
        let model = Flux::load(&gpu, &weights, Some(&config), stream).unwrap();
        let load = start.elapsed().as_secs_f64();
        // The first forward compiles the kernels; the second is timed.
        model.forward(&gpu, &x, &[0.7], &text, 3.5).unwrap();
        gpu.finish().unwrap();
        let start = Instant::now();
        model.forward(&gpu, &x, &[0.7], &text, 3.5).unwrap();
        gpu.finish().unwrap();
        let secs = start.elapsed().as_secs_f64();
        let peak = gpu.memory().peak_bytes as f64 / (1u64 << 30) as f64;
        println!(
            "{:<12} {load:>10.2} {secs:>12.2} {:>12.1} {:>9.2} {peak:>10.2}",
            if stream { "streamed" } else { "resident" },
            secs * scale_to_full,
            flops / secs / 1e9
        );
        if stream {
            println!(
                "streamed: {:.0} % of the forward above the resident one (uploads the device waited for)",
                100.0 * (secs - resident_secs).max(0.0) / secs
            );
        } else {
            resident_secs = secs;
        }
    }
    println!(
        "full s: the forward scaled to FLUX.1-dev's 19 + 38 blocks by FLOPs; peak memory is the pool's \
         (weights + activations) for the blocks run, unscaled"
    );
}
