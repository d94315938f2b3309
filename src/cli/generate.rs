//! `noiseshift generate`: the Euler sampler over an SD3/SD3.5 transformer, from given or seeded
//! latents and a prompt (through the model's text encoders) or given embeddings, optionally with
//! a NoiseShift calibration table.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::cli::prompts::TextArgs;
use crate::cli::{check_size, open_gpu, profile};
use crate::error::{Result, input};
use crate::models::mmdit::Mmdit;
use crate::noiseshift::table::{self, Request, Resolution, Table};
use crate::progress::Progress;
use crate::sampler::{Plan, sample};
use crate::schedule::{DEFAULT_SHIFT, sd3_sigmas};
use crate::tensor_file::{self, HostTensor};
use crate::weights::{Component, ModelPath, WeightSet};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a diffusers pipeline folder, a transformer folder, or a single-file checkpoint.
    #[arg(long, env = "NOISESHIFT_MODEL")]
    model: Option<PathBuf>,
    #[command(flatten)]
    text: TextArgs,
    /// For a single-file checkpoint: a config.json, or a diffusers pipeline folder whose
    /// transformer/config.json, text_encoder*/config.json and tokenizer*/ serve it (what tensor
    /// shapes cannot tell, such as head counts; a single file carries no tokenizers).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Starting latents (safetensors: latents [B, C, h, w]); default: Gaussian noise from --seed.
    #[arg(long, conflicts_with = "seed")]
    latents: Option<PathBuf>,
    /// Seed of the starting noise (our own generator: the same seed gives the same latents here,
    /// not the same as PyTorch's).
    #[arg(long)]
    seed: Option<u64>,
    /// Image width in pixels (multiple of 16). Default: the latents' width, else the model's native size.
    #[arg(long)]
    width: Option<usize>,
    /// Image height in pixels (multiple of 16). Default: the latents' height, else the model's native size.
    #[arg(long)]
    height: Option<usize>,
    /// Sampling steps.
    #[arg(long, default_value_t = 28)]
    steps: usize,
    /// Classifier-free guidance scale; <= 1 runs a single conditional pass.
    #[arg(long, default_value_t = 7.0)]
    guidance: f64,
    /// Timestep shift. Default: the model's scheduler config, else 3.0.
    #[arg(long)]
    shift: Option<f64>,
    /// Rows to sample when starting from --seed noise.
    #[arg(long, default_value_t = 1, conflicts_with = "latents")]
    batch: usize,
    /// Write the final latents here (safetensors, key `latents`).
    #[arg(long)]
    output_latents: Option<PathBuf>,
    /// Decode with the model's VAE and write a PNG.
    #[arg(long)]
    out: Option<PathBuf>,
    /// NoiseShift calibration: a table file, `auto` (a matching table under calibrations/ in
    /// the working directory or beside the model) or `none`.
    #[arg(long, default_value = "auto")]
    calibration: String,
    /// Reuse a table made for another step count or shift by interpolating its
    /// sigma_hat(sigma) curve piecewise-linearly.
    #[arg(long)]
    calibration_interpolate: bool,
    /// Print the per-kernel time table of the run.
    #[arg(long)]
    profile: bool,
    /// Write a Chrome trace (open in Perfetto) of every dispatch of the run.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// Standard Gaussian values of `shape` from a seed.
pub fn seeded_noise(seed: u64, shape: &[usize]) -> HostTensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    HostTensor::new(shape.to_vec(), data)
}

/// Refuse what needs components this model (or this version) does not have, naming them.
fn check_components(args: &Args, components: &[Component]) -> Result<()> {
    if args.out.is_some() {
        if !components.contains(&Component::Vae) {
            return input(
                "--out needs the model's VAE (component 'vae'), which it lacks; use --output-latents FILE",
            );
        }
        return input("VAE decoding is not supported yet; use --output-latents FILE");
    }
    Ok(())
}

/// Where `--calibration auto` looks: calibrations/<name>/ in the working directory and beside
/// the model, and calibrations/ inside a model folder.
fn auto_tables(path: &ModelPath, res: Resolution, steps: usize) -> Vec<PathBuf> {
    let name = path.name();
    let file = format!("{}x{}-{steps}steps.json", res.width, res.height);
    let mut found = vec![table::default_path(Path::new("."), &name, res, steps)];
    if let Some(parent) = path
        .path
        .canonicalize()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        found.push(table::default_path(parent, &name, res, steps));
    }
    if path.path.is_dir() {
        found.push(path.path.join("calibrations").join(file));
    }
    found.into_iter().filter(|p| p.exists()).collect()
}

/// The conditioning levels: the sigmas themselves, or a calibration table's sigma_hat.
fn calibration_levels(args: &Args, path: &ModelPath, req: &Request<'_>) -> Result<Vec<f64>> {
    let steps = req.sigmas.len() - 1;
    let uncalibrated = req.sigmas[..steps].to_vec();
    match args.calibration.as_str() {
        "none" => Ok(uncalibrated),
        "auto" => {
            for candidate in auto_tables(path, req.resolution, steps) {
                let found = Table::read(&candidate)
                    .and_then(|t| t.levels(&candidate, req, args.calibration_interpolate));
                match found {
                    Ok((levels, note)) => {
                        eprintln!(
                            "calibration: {}",
                            note.unwrap_or_else(|| candidate.display().to_string())
                        );
                        return Ok(levels);
                    }
                    Err(e) => eprintln!("calibration: ignoring {}: {e}", candidate.display()),
                }
            }
            eprintln!(
                "calibration: no table for {}x{} at {steps} steps; sampling uncalibrated (see `noiseshift calibrate`)",
                req.resolution.width, req.resolution.height
            );
            Ok(uncalibrated)
        }
        file => {
            let file = Path::new(file);
            let (levels, note) =
                Table::read(file)?.levels(file, req, args.calibration_interpolate)?;
            eprintln!(
                "calibration: {}",
                note.unwrap_or_else(|| file.display().to_string())
            );
            Ok(levels)
        }
    }
}

pub fn run(args: Args, device: Option<&str>) -> Result<()> {
    let Some(model_path) = &args.model else {
        return input("no model given: pass --model MODEL (or set NOISESHIFT_MODEL)");
    };
    let mut path = ModelPath::resolve(model_path)?;
    if let Some(config) = &args.config {
        path.apply_config(config)?;
    }
    let weights = WeightSet::open(&path.transformer_files)?;
    check_components(&args, &path.components(&weights))?;
    args.text.check()?;
    if args.output_latents.is_none() && args.text.output_embeds.is_none() {
        return input("nothing to write: pass --output-latents FILE (or --output-embeds FILE)");
    }
    if args.steps == 0 {
        return input("--steps must be at least 1");
    }
    if args.batch == 0 {
        return input("--batch must be at least 1");
    }
    let (config, _) = crate::models::mmdit::MmditConfig::resolve(&weights, path.config.as_ref())?;
    let multiple = 8 * config.patch;

    let latents = match &args.latents {
        Some(p) => {
            let l = tensor_file::take(&mut tensor_file::read(p)?, "latents", p)?;
            let [_, _, h, w] = l.shape[..] else {
                return input(format!(
                    "{}: latents {:?} must be [B, C, h, w]",
                    p.display(),
                    l.shape
                ));
            };
            let (width, height) = (args.width.unwrap_or(8 * w), args.height.unwrap_or(8 * h));
            if (width, height) != (8 * w, 8 * h) {
                return input(format!(
                    "--width/--height {width}x{height} do not match the latents' {}x{} pixels ({w}x{h} latents)",
                    8 * w,
                    8 * h
                ));
            }
            check_size(width, height, multiple)?;
            l
        }
        None => {
            let native = 8 * config.sample_size;
            let (width, height) = (args.width.unwrap_or(native), args.height.unwrap_or(native));
            check_size(width, height, multiple)?;
            seeded_noise(
                args.seed.unwrap_or(0),
                &[args.batch, config.in_channels, height / 8, width / 8],
            )
        }
    };
    let shift = args.shift.or(path.scheduler_shift).unwrap_or(DEFAULT_SHIFT);
    if !(shift > 0.0 && shift.is_finite()) {
        return input(format!("--shift must be a positive number, got {shift}"));
    }
    let sigmas = sd3_sigmas(args.steps, shift);
    let resolution = Resolution {
        width: 8 * latents.shape[3],
        height: 8 * latents.shape[2],
    };
    let request = Request {
        fingerprint: &weights.fingerprint(),
        resolution,
        sigmas: &sigmas,
        shift,
    };
    let levels = calibration_levels(&args, &path, &request)?;

    let gpu = open_gpu(device, args.profile || args.trace.is_some())?;
    let batch = latents.shape[0];
    let guided = args.guidance > 1.0;
    // The text encoders run (and free their weights) before the transformer loads.
    let host = args.text.host_prompts(
        &gpu,
        &path,
        args.config.as_deref(),
        &weights,
        &config,
        guided,
    )?;
    let Some(output) = &args.output_latents else {
        return Ok(());
    };
    let prompts = host.upload(&gpu, batch)?;
    eprintln!("loading {} on {}", path.path.display(), gpu.adapter.label());
    let model = Mmdit::load(&gpu, &weights, path.config.as_ref())?;
    model.check_latents(&latents.shape)?;
    let x0 = latents.upload(&gpu)?;
    let mut progress = Progress::new("sampling", args.steps as u64);
    let plan = Plan {
        sigmas: &sigmas,
        levels: &levels,
        guidance: args.guidance,
    };
    let out = sample(&gpu, &model, &x0, &prompts, &plan, |i| {
        gpu.finish()?;
        progress.advance(1, &format!("step {} sigma {:.4}", i + 1, sigmas[i]));
        Ok(())
    })?;
    progress.finish();
    let result = tensor_file::download(&gpu, &out)?;
    tensor_file::write(output, &[("latents", &result)])?;
    eprintln!(
        "wrote {} ({} x {:?}) after {} steps in {:.1} s (shift {shift}, guidance {})",
        output.display(),
        batch,
        &result.shape[1..],
        args.steps,
        progress.elapsed(),
        args.guidance
    );
    if args.profile || args.trace.is_some() {
        profile::report_run(&gpu, args.profile, args.trace.as_deref())?;
    }
    Ok(())
}
