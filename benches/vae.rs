//! The SD3 VAE decoder at full size with random f16 weights (block_out_channels 128, 256, 512,
//! 512; 16 latent channels): one 1024 x 1024 decode (128 x 128 latents) untiled where its
//! activations fit the device's bindings and in the tiles `--vae-tiling auto` picks, as
//! `generate --out` runs it: seconds, achieved GFLOP/s and peak device memory; where 1024 does
//! not fit untiled, also the largest size that does, untiled and tiled. NOISESHIFT_BENCH_VAE_LATENTS
//! sets the latent side (default 128). The kernels are compiled on a small decode first.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{gpu, write_random};
use noiseshift::models::vae::Parts;
use noiseshift::models::vae::locate::VaeSource;
use noiseshift::models::vae::tiling::{self, TilePlan, TilingMode};
use noiseshift::tensor_file::HostTensor;

const CHANNELS: [usize; 4] = [128, 256, 512, 512];
const LAYERS: usize = 2;
const LATENT: usize = 16;

/// A diffusers VAE folder (decoder weights only) written once under target/bench-models.
fn checkpoint() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-models/sd3-vae-random");
    let file = dir.join("diffusion_pytorch_model.safetensors");
    if file.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut conv = |name: String, cin: usize, cout: usize, k: usize| {
        t.push((format!("{name}.weight"), vec![cout, cin, k, k]));
        t.push((format!("{name}.bias"), vec![cout]));
    };
    let top = CHANNELS[3];
    conv("decoder.conv_in".into(), LATENT, top, 3);
    let mut resnets: Vec<(String, usize, usize)> = (0..2)
        .map(|j| (format!("decoder.mid_block.resnets.{j}"), top, top))
        .collect();
    let mut prev = top;
    for (i, &c) in CHANNELS.iter().rev().enumerate() {
        for j in 0..=LAYERS {
            let cin = if j == 0 { prev } else { c };
            resnets.push((format!("decoder.up_blocks.{i}.resnets.{j}"), cin, c));
        }
        if i + 1 < CHANNELS.len() {
            conv(format!("decoder.up_blocks.{i}.upsamplers.0.conv"), c, c, 3);
        }
        prev = c;
    }
    for (name, cin, cout) in &resnets {
        conv(format!("{name}.conv1"), *cin, *cout, 3);
        conv(format!("{name}.conv2"), *cout, *cout, 3);
        if cin != cout {
            conv(format!("{name}.conv_shortcut"), *cin, *cout, 1);
        }
    }
    conv("decoder.conv_out".into(), CHANNELS[0], 3, 3);
    let mut norm = |name: String, c: usize| {
        t.push((format!("{name}.weight"), vec![c]));
        t.push((format!("{name}.bias"), vec![c]));
    };
    for (name, cin, cout) in &resnets {
        norm(format!("{name}.norm1"), *cin);
        norm(format!("{name}.norm2"), *cout);
    }
    norm("decoder.mid_block.attentions.0.group_norm".into(), top);
    norm("decoder.conv_norm_out".into(), CHANNELS[0]);
    for part in ["to_q", "to_k", "to_v", "to_out.0"] {
        let name = format!("decoder.mid_block.attentions.0.{part}");
        t.push((format!("{name}.weight"), vec![top, top]));
        t.push((format!("{name}.bias"), vec![top]));
    }
    write_random(&file, t);
    let config = serde_json::json!({
        "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
        "block_out_channels": CHANNELS, "layers_per_block": LAYERS, "latent_channels": LATENT,
        "norm_num_groups": 32, "scaling_factor": 1.5305, "shift_factor": 0.0609,
        "use_quant_conv": false, "use_post_quant_conv": false,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

/// Multiply-adds x 2 of decoding s x s latents: every conv, the mid-block attention's
/// projections and its scores and weighted sum over all s^2 positions.
fn flops(s: usize) -> f64 {
    let conv =
        |cin: usize, cout: usize, k: usize, px: usize| 2.0 * (k * k * cin * cout * px) as f64;
    let top = CHANNELS[3];
    let n = s * s;
    let mut f = conv(LATENT, top, 3, n);
    f += 4.0 * conv(top, top, 3, n) + 4.0 * conv(top, top, 1, n);
    f += 4.0 * (n * n * top) as f64;
    let (mut prev, mut px) = (top, n);
    for (i, &c) in CHANNELS.iter().rev().enumerate() {
        for j in 0..=LAYERS {
            let cin = if j == 0 { prev } else { c };
            f += conv(cin, c, 3, px) + conv(c, c, 3, px);
            if cin != c {
                f += conv(cin, c, 1, px);
            }
        }
        if i + 1 < CHANNELS.len() {
            px *= 4;
            f += conv(c, c, 3, px);
        }
        prev = c;
    }
    f + conv(CHANNELS[0], 3, 3, px)
}

/// Smooth random latents [1, 16, s, s].
fn latents(s: usize) -> HostTensor {
    let data = (0..LATENT * s * s)
        .map(|i| {
            let (c, y, x) = (i / (s * s), (i / s) % s, i % s);
            ((x as f32 * 0.11 + c as f32).sin() + (y as f32 * 0.07 - c as f32).cos()) * 0.5
        })
        .collect();
    HostTensor::new(vec![1, LATENT, s, s], data)
}

fn main() {
    let gpu = gpu();
    let s: usize = std::env::var("NOISESHIFT_BENCH_VAE_LATENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let source = VaeSource::open(&checkpoint(), None).unwrap();
    let vae = source.load(&gpu, Parts::Decoder).unwrap();
    let weights = gpu.memory().peak_bytes;
    println!(
        "VAE decode on {}: {1}x{1} px from {s}x{s} latents, {2:.0} GFLOP untiled, weights {3:.0} MiB",
        gpu.adapter.label(),
        s * 8,
        flops(s) / 1e9,
        weights as f64 / 1048576.0
    );
    let limit = gpu.max_binding().min(gpu.limits.max_buffer_size);
    let fits = |s: usize| tiling::decode_bytes(&vae, s, s) <= limit;
    tiling::decode(&gpu, &vae, &latents(16), None).unwrap();
    println!(
        "{:<44} {:>9} {:>9} {:>10}",
        "case", "s", "GFLOP/s", "peak MiB"
    );
    // The size asked for untiled (where its activations fit one binding) and tiled as
    // `--vae-tiling auto` would; and, where the asked size does not fit untiled, the largest
    // side that does, untiled and in tiles of half its side, for the cost of tiling itself.
    let largest = (8..=s).rev().step_by(8).find(|&v| fits(v));
    let mut cases: Vec<(usize, Option<TilePlan>)> = vec![(s, None)];
    let (auto, _) = tiling::plan(&gpu, TilingMode::Auto, s, s, &|a, b| {
        tiling::decode_bytes(&vae, a, b)
    })
    .unwrap();
    if let Some(p) = auto {
        cases.push((s, Some(p)));
    }
    if let Some(f) = largest.filter(|&f| f < s) {
        cases.push((f, None));
        cases.push((
            f,
            Some(TilePlan {
                tile: f / 2,
                overlap: f / 8,
            }),
        ));
    }
    for (side, plan) in cases {
        let name = match plan {
            None => format!("{0}x{0} px untiled", 8 * side),
            Some(p) => format!(
                "{0}x{0} px, tiles {1}, overlap {2}",
                8 * side,
                p.tile,
                p.overlap
            ),
        };
        if plan.is_none() && !fits(side) {
            println!(
                "{name:<44} skipped: its largest activation ({} MiB) exceeds the device's {} MiB binding",
                tiling::decode_bytes(&vae, side, side) >> 20,
                limit >> 20
            );
            continue;
        }
        // Tiles decode more than the image: count what runs.
        let work = match plan {
            Some(p) if side > p.tile => {
                let per = (side - p.overlap).div_ceil(p.tile - p.overlap);
                (per * per) as f64 * flops(p.tile)
            }
            _ => flops(side),
        };
        gpu.trim_memory();
        gpu.reset_peak_memory();
        let start = Instant::now();
        let image = tiling::decode(&gpu, &vae, &latents(side), plan).unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(image.shape, vec![1, 3, 8 * side, 8 * side]);
        println!(
            "{name:<44} {secs:>9.2} {:>9.2} {:>10.0}",
            work / secs / 1e9,
            gpu.memory().peak_bytes as f64 / 1048576.0
        );
    }
    println!(
        "peak memory is the pool's (weights + activations); GFLOP/s counts the work the tiles run \
         (their overlaps included); wall time includes the host-side blend and download"
    );
}
