//! `noiseshift profile`: every kernel at representative model shapes (or one forward of a
//! given model), per-kernel times against the device's ceilings measured in the same run.

use std::path::{Path, PathBuf};

use noiseshift_kernels::Gpu;
use noiseshift_kernels::suite::{self, SuiteShape};
use serde_json::json;

use crate::cli::{check_size, open_gpu};
use crate::error::{Result, input};
use crate::models::joint::TextConditioning;
use crate::models::transformer::{Placement, Transformer, TransformerConfig};
use crate::noise::seeded_noise;
use crate::profiling::{report_run, summarize};
use crate::weights::{ModelPath, WeightSet};

#[derive(clap::Args)]
pub struct Args {
    /// Profile one transformer forward of this model instead of the kernel suite.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Image width in pixels for --model.
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Image height in pixels for --model.
    #[arg(long, default_value_t = 512)]
    height: usize,
    /// Tokens per sample of the kernel suite (image + text; 1357 is SD3 at 512x512).
    #[arg(long, default_value_t = 1357)]
    tokens: usize,
    /// Timed repetitions of the suite.
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Write a Chrome trace (open in Perfetto or chrome://tracing).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print the per-kernel records as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One forward of `model` at width x height with random inputs and 333 text tokens.
fn profile_model(gpu: &Gpu, path: &Path, width: usize, height: usize) -> Result<()> {
    let mp = ModelPath::resolve(path)?;
    let weights = WeightSet::open(&mp.transformer_files)?;
    // Checked before the weights go to the device.
    let config = TransformerConfig::resolve(&weights, mp.config.as_ref())?;
    check_size(width, height, config.pixel_multiple())?;
    let model = Transformer::load(gpu, &weights, mp.config.as_ref(), Placement::RESIDENT)?;
    let latents = seeded_noise(0, &[1, config.latent_channels(), height / 8, width / 8]);
    let (joint, pooled) = config.text_dims();
    let text = TextConditioning {
        embeds: seeded_noise(1, &[1, 333, joint]).upload(gpu)?,
        pooled: seeded_noise(2, &[1, pooled]).upload(gpu)?,
    };
    let x = latents.upload(gpu)?;
    // Warm-up builds the pipelines; the second forward is the one timed. Guidance 1: one
    // conditional pass (SD3), FLUX.1-dev's embedding at 1.
    model.velocity(gpu, &x, &[0.5], &text, 1.0)?;
    gpu.finish()?;
    gpu.profiler().set_enabled(true);
    model.velocity(gpu, &x, &[0.5], &text, 1.0)?;
    gpu.finish()?;
    Ok(())
}

pub fn run(args: Args, device: Option<&str>) -> Result<()> {
    let gpu = open_gpu(device, false)?;
    eprintln!("profiling on {}", gpu.adapter.label());
    match &args.model {
        Some(path) => profile_model(&gpu, path, args.width, args.height)?,
        None => {
            if args.tokens == 0 || args.reps == 0 {
                return input("--tokens and --reps must be at least 1");
            }
            gpu.profiler().set_enabled(true);
            suite::run(
                &gpu,
                SuiteShape {
                    tokens: args.tokens,
                    ..SuiteShape::default()
                },
                args.reps,
            )?;
        }
    }
    if args.json {
        let (summaries, ceilings, timing) = summarize(&gpu, args.trace.as_deref())?;
        let out = json!({
            "device": gpu.adapter,
            "timing": timing,
            "ceilings": ceilings,
            "kernels": summaries,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialisable")
        );
        return Ok(());
    }
    report_run(&gpu, true, args.trace.as_deref())
}
