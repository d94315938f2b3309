//! Shared bench helpers: timing ops through the profiler (GPU timestamps where the adapter
//! has trustworthy ones, wall time per dispatch on software adapters) and printing rows.
#![allow(dead_code)]

use noiseshift_kernels::ops::matmul::BufferLinear;
use noiseshift_kernels::{Ceilings, Gpu, GpuOptions};

/// The default adapter; NOISESHIFT_BENCH_LINEAR=blocked|tiled|wide|coop|auto picks the kernel of
/// matmuls whose weights live in buffers (hardware GPUs).
pub fn gpu() -> Gpu {
    let gpu = Gpu::new(&GpuOptions::default()).expect("a wgpu adapter");
    if let Ok(name) = std::env::var("NOISESHIFT_BENCH_LINEAR") {
        let variant = match name.as_str() {
            "blocked" => BufferLinear::Blocked,
            "tiled" => BufferLinear::Tiled,
            "wide" => BufferLinear::Wide,
            "coop" => BufferLinear::Coop,
            "auto" => BufferLinear::Auto,
            other => {
                panic!("NOISESHIFT_BENCH_LINEAR={other}: not blocked, tiled, wide, coop or auto")
            }
        };
        gpu.force_variant(Some(variant));
    }
    gpu
}

/// Repeat `run` for at least 0.3 s (once where one run takes longer) and say how often:
/// hardware GPUs idle at a fraction of their clock (an H200 at 345 of 1980 MHz) and need
/// sustained work to ramp up, which short timed runs after host-side work would not give them.
pub fn warm_up(gpu: &Gpu, run: &mut dyn FnMut()) -> usize {
    let start = std::time::Instant::now();
    let mut runs = 0;
    while runs == 0 || start.elapsed().as_secs_f64() < 0.3 {
        run();
        gpu.finish().unwrap();
        runs += 1;
    }
    runs
}

/// Best-of-`reps` seconds of everything `run` dispatches, after warming up; at least ten
/// repetitions where runs are short (under 30 ms: GPUs), whose timings spread more.
pub fn time(gpu: &Gpu, reps: usize, run: &mut dyn FnMut()) -> f64 {
    let reps = if warm_up(gpu, run) >= 10 {
        reps.max(10)
    } else {
        reps
    };
    gpu.profiler().take_records();
    let was = gpu.profiler().enabled();
    gpu.profiler().set_enabled(true);
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        run();
        gpu.finish().unwrap();
        let secs: f64 = gpu
            .profiler()
            .take_records()
            .iter()
            .map(|r| r.dur_us * 1e-6)
            .sum();
        best = best.min(secs);
    }
    gpu.profiler().set_enabled(was);
    best
}

pub fn header() {
    println!(
        "{:<44} {:>10} {:>9} {:>9} {:>9}",
        "case", "ms", "GFLOP/s", "GB/s", "ceiling"
    );
}

/// One result row; the ceiling column is the larger of compute and bandwidth use.
pub fn row(name: &str, secs: f64, flops: f64, bytes: f64, c: Ceilings) {
    let (gf, gb) = (flops / secs / 1e9, bytes / secs / 1e9);
    let frac = (gf / c.gflops).max(gb / c.gbps);
    println!(
        "{name:<44} {:>10.2} {gf:>9.2} {gb:>9.2} {:>8.1}%",
        secs * 1e3,
        100.0 * frac
    );
}

/// A tensor whose random f16 or bf16 values are generated when the writer asks for them, so a
/// multi-gigabyte checkpoint is written without holding it in memory.
struct Lazy {
    shape: Vec<usize>,
    scale: f32,
    offset: f32,
    seed: u64,
    bf16: bool,
}

impl safetensors::View for Lazy {
    fn dtype(&self) -> safetensors::Dtype {
        if self.bf16 {
            safetensors::Dtype::BF16
        } else {
            safetensors::Dtype::F16
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let n: usize = self.shape.iter().product();
        let mut state = self.seed;
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            // splitmix64: cheap, deterministic, good enough for benchmark weights.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32;
            let v = self.offset + (2.0 * u - 1.0) * self.scale;
            if self.bf16 {
                out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            } else {
                out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        std::borrow::Cow::Owned(out)
    }
    fn data_len(&self) -> usize {
        2 * self.shape.iter().product::<usize>()
    }
}

/// Write random f16 `tensors` to `file` (through a temporary file): weights ~ U(-1, 1)
/// sqrt(3 / fan_in), so activations stay O(1) through the blocks; biases small, 1-D weights (norms)
/// near 1, embedding and position tables O(1).
pub fn write_random(file: &std::path::Path, tensors: Vec<(String, Vec<usize>)>) {
    write_random_as(file, tensors, false)
}

/// [`write_random`] in bf16 (`bf16`) or f16.
pub fn write_random_as(file: &std::path::Path, tensors: Vec<(String, Vec<usize>)>, bf16: bool) {
    eprintln!("writing random weights to {} (once)", file.display());
    let views = tensors.into_iter().enumerate().map(|(i, (name, shape))| {
        let fan_in = if shape.len() >= 2 {
            shape[1..].iter().product::<usize>()
        } else {
            1
        };
        let (scale, offset) = if shape.len() == 1 && name.ends_with(".weight") {
            (0.1, 1.0)
        } else if name.ends_with(".bias") {
            (0.02, 0.0)
        } else if name.contains("pos_embed.pos_embed")
            || name.contains("embedding")
            || name.contains("shared")
        {
            (0.5, 0.0)
        } else {
            ((3.0 / fan_in as f32).sqrt(), 0.0)
        };
        (
            name,
            Lazy {
                shape,
                scale,
                offset,
                seed: i as u64 + 1,
                bf16,
            },
        )
    });
    let tmp = file.with_extension("partial");
    safetensors::serialize_to_file(views, None, &tmp).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// A diffusers transformer folder with SD3-medium's shapes (24 blocks, hidden 1536, 192x192
/// position grid) and random f16 weights, written once under target/bench-models.
pub fn sd3_medium_random() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-models/sd3-medium-random");
    let file = dir.join("diffusion_pytorch_model.safetensors");
    if file.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let (d, depth) = (1536usize, 24usize);
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("pos_embed.pos_embed".into(), vec![1, 192 * 192, d])];
    // A weight of `shape` and its bias [shape[0]].
    let mut layer = |name: String, shape: Vec<usize>| {
        let out = shape[0];
        tensors.push((format!("{name}.weight"), shape));
        tensors.push((format!("{name}.bias"), vec![out]));
    };
    layer("pos_embed.proj".into(), vec![d, 16, 2, 2]);
    for (name, inp) in [
        ("time_text_embed.timestep_embedder.linear_1", 256),
        ("time_text_embed.timestep_embedder.linear_2", d),
        ("time_text_embed.text_embedder.linear_1", 2048),
        ("time_text_embed.text_embedder.linear_2", d),
        ("context_embedder", 4096),
    ] {
        layer(name.into(), vec![d, inp]);
    }
    layer("norm_out.linear".into(), vec![2 * d, d]);
    layer("proj_out".into(), vec![64, d]);
    for i in 0..depth {
        let last = i + 1 == depth;
        let mut linear = |name: &str, out: usize, inp: usize| {
            layer(format!("transformer_blocks.{i}.{name}"), vec![out, inp]);
        };
        for name in [
            "attn.to_q",
            "attn.to_k",
            "attn.to_v",
            "attn.add_q_proj",
            "attn.add_k_proj",
            "attn.add_v_proj",
            "attn.to_out.0",
        ] {
            linear(name, d, d);
        }
        linear("norm1.linear", 6 * d, d);
        linear("norm1_context.linear", if last { 2 * d } else { 6 * d }, d);
        linear("ff.net.0.proj", 4 * d, d);
        linear("ff.net.2", d, 4 * d);
        if !last {
            linear("attn.to_add_out", d, d);
            linear("ff_context.net.0.proj", 4 * d, d);
            linear("ff_context.net.2", d, 4 * d);
        }
    }
    write_random(&file, tensors);
    let config = serde_json::json!({
        "_class_name": "SD3Transformer2DModel", "num_layers": depth, "attention_head_dim": 64,
        "num_attention_heads": 24, "patch_size": 2, "in_channels": 16, "out_channels": 16,
        "joint_attention_dim": 4096, "caption_projection_dim": d, "pooled_projection_dim": 2048,
        "pos_embed_max_size": 192, "sample_size": 128, "qk_norm": null, "dual_attention_layers": []
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    dir
}
