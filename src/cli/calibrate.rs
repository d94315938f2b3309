//! `noiseshift calibrate`: find NoiseShift's sigma_hat for every step of a model's schedule at
//! one resolution and write the calibration table (saved after every step; `--resume` goes on
//! from where an interrupted run stopped).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::prompts::EncoderArgs;
use crate::cli::{check_output, check_size, open_gpu, open_vae, ranges};
use crate::error::{Error, Result, input};
use crate::models::mmdit::{Mmdit, MmditConfig};
use crate::models::vae::tiling::TilingMode;
use crate::models::vae::{Parts, Vae};
use crate::noiseshift::dataset::{Dataset, Expect};
use crate::noiseshift::images::{self, ImagesRequest};
use crate::noiseshift::search::{Engine, SearchConfig};
use crate::noiseshift::table::{self, ModelInfo, Resolution, Schedule, Search, Table};
use crate::noiseshift::{plot, velocity::MmditVelocity};
use crate::progress::Progress;
use crate::schedule::{DEFAULT_SHIFT, sd3_sigmas};
use crate::weights::{ConfigOverride, WeightSet};

/// Candidates per stage and step past which a search is a mistyped flag, not a plan.
const MAX_CANDIDATES: f64 = 2001.0;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a diffusers pipeline folder, a transformer folder, a single-file checkpoint, or
    /// `builtin` (the default: the small model inside this program).
    #[arg(long, env = "NOISESHIFT_MODEL")]
    model: Option<PathBuf>,
    /// Image width in pixels (multiple of 16, 16..=16384).
    #[arg(long, value_parser = ranges::count(ranges::SIDE))]
    width: usize,
    /// Image height in pixels (multiple of 16, 16..=16384).
    #[arg(long, value_parser = ranges::count(ranges::SIDE))]
    height: usize,
    /// Sampling steps of the schedule to calibrate (1..=1000). Default: the model's own
    /// (noiseshift.json: the built-in model's 20), else 28.
    #[arg(long, value_parser = ranges::count(ranges::STEPS))]
    steps: Option<usize>,
    /// Timestep shift (0.01..=100). Default: the model's scheduler config, else 3.0.
    #[arg(long, value_parser = ranges::real(0.01, 100.0))]
    shift: Option<f64>,
    /// Calibration data: safetensors with x0 [N, C, h, w], optional noise, and per-sample
    /// prompt_embeds / pooled_prompt_embeds.
    #[arg(long, conflicts_with = "images", required_unless_present = "images")]
    dataset: Option<PathBuf>,
    /// A folder of PNG/JPEG images (resized and centre-cropped, encoded by the model's VAE).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Captions for --images: JSON lines {"file": NAME, "caption": TEXT} or NAME<TAB>TEXT
    /// lines, encoded by the model's text encoders (images without one, or all without
    /// --captions, take the empty prompt).
    #[arg(long, requires = "images")]
    captions: Option<PathBuf>,
    /// Conditioning for --images instead of the text encoders: safetensors with prompt_embeds
    /// and pooled_prompt_embeds, one shared row or one per image file in name order (optional
    /// negative_* for guidance).
    #[arg(long, requires = "images")]
    embeds: Option<PathBuf>,
    /// Sample the latent distribution of each image (seeded) instead of taking its mean.
    #[arg(long, requires = "images")]
    sample_latents: bool,
    /// Encode --images in overlapping tiles: `auto` when the activations would not fit.
    #[arg(long, value_enum, default_value = "auto")]
    vae_tiling: TilingMode,
    /// A config.json (transformer or VAE), or a diffusers folder whose transformer/ and vae/
    /// configs (and text_encoder*/ configs and tokenizer*/ folders) are used, for single-file
    /// checkpoints whose configuration cannot be inferred.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    encoders: EncoderArgs,
    /// Samples to use (1..=100000; default: all in the dataset; for --images the first 200 usable).
    #[arg(long, value_parser = ranges::count(1..=100_000))]
    samples: Option<usize>,
    /// Seed of the noise (when the dataset has none) and of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Half-width of the coarse search window around sigma_i (0.0001..=1).
    #[arg(long, default_value_t = 0.1, value_parser = ranges::real(1e-4, 1.0))]
    coarse_window: f64,
    /// Spacing of the coarse candidates (0.0001..=1).
    #[arg(long, default_value_t = 0.01, value_parser = ranges::real(1e-4, 1.0))]
    coarse_stride: f64,
    /// Half-width of the fine window around the coarse winner (0.00001..=1).
    #[arg(long, default_value_t = 0.01, value_parser = ranges::real(1e-5, 1.0))]
    fine_window: f64,
    /// Spacing of the fine candidates (0.00001..=1).
    #[arg(long, default_value_t = 0.001, value_parser = ranges::real(1e-5, 1.0))]
    fine_stride: f64,
    /// Search further out while the coarse winner sits on the window's edge.
    #[arg(long)]
    widen: bool,
    /// Rows (candidate x sample) per model evaluation. Default: the most the device's binding
    /// limits allow for this model and resolution (1..=65536).
    #[arg(long, value_parser = ranges::count(1..=65_536))]
    batch: Option<usize>,
    /// Guidance scale during calibration (0..=100; > 1 needs negative embeddings in the dataset).
    #[arg(long, default_value_t = 1.0, value_parser = ranges::real(0.0, 100.0))]
    guidance: f64,
    /// Bootstrap resamples for the standard error of each sigma_hat (0..=10000; 0 turns it off).
    #[arg(long, default_value_t = 200, value_parser = ranges::count(0..=10_000))]
    bootstrap: usize,
    /// Where to write the table. Default: calibrations/<model-name>/<W>x<H>-<N>steps.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run whose partial table is at the output path.
    #[arg(long)]
    resume: bool,
    /// Also draw sigma_hat against sigma and the per-step loss reduction into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The search settings recorded in (and checked against) the table.
fn search_record(args: &Args, samples: usize, dataset: &str) -> Search {
    Search {
        coarse_window: args.coarse_window,
        coarse_stride: args.coarse_stride,
        fine_window: args.fine_window,
        fine_stride: args.fine_stride,
        widen: args.widen,
        samples,
        seed: args.seed,
        guidance: args.guidance,
        dataset: dataset.to_string(),
    }
}

/// The partial table to resume, after checking it belongs to this very run.
fn resumable(path: &Path, fresh: &Table) -> Result<Table> {
    let old = Table::read(path)?;
    let same = old.model == fresh.model
        && old.resolution == fresh.resolution
        && old.schedule == fresh.schedule
        && old.search == fresh.search;
    if !same {
        return input(format!(
            "{} was made with other settings (model, resolution, schedule or search); cannot --resume it",
            path.display()
        ));
    }
    if old
        .steps
        .iter()
        .zip(&fresh.steps)
        .any(|(a, b)| (a.sigma - b.sigma).abs() > 1e-12)
    {
        return input(format!(
            "{}: its sigmas differ from this schedule's",
            path.display()
        ));
    }
    Ok(old)
}

pub fn run(args: Args, device: Option<&str>) -> Result<()> {
    let path = crate::builtin::resolve(args.model.as_deref())?;
    let weights = WeightSet::open(&path.transformer_files)?;
    let configs = ConfigOverride::read(args.config.as_deref())?;
    let tconfig = configs.transformer.as_ref().or(path.config.as_ref());
    let (config, _) = MmditConfig::resolve(&weights, tconfig)?;
    check_size(args.width, args.height, 8 * config.patch)?;
    let steps = args.steps.or(path.defaults.steps).unwrap_or(28);
    if !ranges::STEPS.contains(&steps) {
        return input(format!("{steps} steps is outside {:?}", ranges::STEPS));
    }
    for (name, window, stride) in [
        ("coarse", args.coarse_window, args.coarse_stride),
        ("fine", args.fine_window, args.fine_stride),
    ] {
        let candidates = 2.0 * window / stride + 1.0;
        if candidates > MAX_CANDIDATES {
            return input(format!(
                "--{name}-window {window} / --{name}-stride {stride} gives {candidates:.0} candidates per \
                 step, more than {MAX_CANDIDATES}"
            ));
        }
    }
    let shift = args.shift.or(path.scheduler_shift).unwrap_or(DEFAULT_SHIFT);
    if !(shift > 0.0 && shift.is_finite()) {
        return input(format!("--shift must be a positive number, got {shift}"));
    }
    let expect = Expect {
        channels: config.in_channels,
        latent_h: args.height / 8,
        latent_w: args.width / 8,
        joint_dim: config.joint_attention_dim,
        pooled_dim: config.pooled_dim,
    };
    let resolution = Resolution {
        width: args.width,
        height: args.height,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| table::default_path(Path::new("."), &path.name(), resolution, steps));
    let mut inputs: Vec<&Path> = path
        .transformer_files
        .iter()
        .map(PathBuf::as_path)
        .collect();
    inputs.extend(args.dataset.as_deref());
    inputs.extend(args.captions.as_deref());
    inputs.extend(args.embeds.as_deref());
    check_output(&out, &inputs)?;
    if let Some(plot) = &args.plot {
        inputs.push(&out);
        check_output(plot, &inputs)?;
    }
    let gpu = open_gpu(device, false)?;
    let data = match (&args.dataset, &args.images) {
        (Some(file), _) => Dataset::load(file, args.samples, args.seed, &expect)?,
        (None, Some(dir)) => {
            // The folder and its captions are checked before the VAE is looked for.
            let files = images::list(dir)?;
            if let Some(c) = &args.captions {
                images::read_captions(c, &files)?;
            }
            let source = open_vae(&path, configs.vae.as_ref(), config.in_channels)?;
            let vae = Vae::load(
                &gpu,
                &source.weights,
                &source.keys,
                source.config,
                Parts::Encoder,
            )?;
            // Captions (or the empty prompt) through the text encoders, unless --embeds.
            let encoder = match &args.embeds {
                Some(_) => None,
                None => Some(args.encoders.prompt_encoder(
                    &gpu,
                    &path,
                    args.config.as_deref().filter(|p| p.is_dir()),
                    &weights,
                    &config,
                )?),
            };
            let req = ImagesRequest {
                dir,
                captions: args.captions.as_deref(),
                embeds: args.embeds.as_deref(),
                samples: args.samples,
                width: args.width,
                height: args.height,
                seed: args.seed,
                sample_latents: args.sample_latents,
                tiling: args.vae_tiling,
                encoder: encoder.as_ref(),
                negative: args.guidance > 1.0,
            };
            let data = images::dataset(&gpu, &vae, &req)?;
            data.check(&expect)?;
            gpu.trim_memory();
            data
        }
        (None, None) => unreachable!("clap requires --dataset or --images"),
    };
    let guidance = if args.guidance > 1.0 {
        let Some((e, p)) = data.negative.clone() else {
            return input(
                "--guidance > 1 needs negative_prompt_embeds and negative_pooled_prompt_embeds in the dataset",
            );
        };
        Some((e, p, args.guidance))
    } else {
        None
    };
    let sigmas = sd3_sigmas(steps, shift);
    let samples = data.x0.shape[0];

    let mut table = Table {
        format: table::FORMAT.into(),
        model: ModelInfo {
            family: config.family().into(),
            name: path.name(),
            fingerprint: weights.fingerprint(),
        },
        resolution,
        schedule: Schedule {
            steps,
            shift,
            mu: None,
        },
        search: search_record(&args, samples, &data.description),
        steps: Vec::new(),
        device: gpu.adapter.label(),
        elapsed_seconds: 0.0,
        created: table::now_utc(),
    };
    if args.resume {
        if out.exists() {
            table = resumable(&out, &table)?;
            eprintln!(
                "resuming {} at step {} of {}",
                out.display(),
                table.steps.len(),
                steps
            );
        } else {
            eprintln!(
                "nothing to resume at {}: starting from step 0",
                out.display()
            );
        }
    }

    eprintln!("loading {} on {}", path.path.display(), gpu.adapter.label());
    let model = Mmdit::load(&gpu, &weights, tconfig)?;
    let velocity = MmditVelocity::new(&model, data.embeds, data.pooled, guidance);
    let batch = args
        .batch
        .unwrap_or_else(|| velocity.default_batch(&gpu, expect.latent_h, expect.latent_w));
    let search = SearchConfig {
        sigmas: sigmas.clone(),
        coarse_window: args.coarse_window,
        coarse_stride: args.coarse_stride,
        fine_window: args.fine_window,
        fine_stride: args.fine_stride,
        widen: args.widen,
        batch,
        bootstrap: args.bootstrap,
        seed: args.seed,
    };
    let engine = Engine::new(&gpu, &velocity, data.x0, data.noise, search)?;
    let first = table.steps.len();
    eprintln!(
        "calibrating steps {first}..{} at {}x{} with {samples} samples, {batch} rows per forward",
        steps, args.width, args.height
    );
    let start = Instant::now();
    let already = table.elapsed_seconds;
    // rows_per_step is an upper bound: candidates outside [0, upper] are never run.
    let per_step = engine.rows_per_step() as u64;
    let mut progress = Progress::new("calibrating", (steps - first) as u64 * per_step);
    let mut evaluations = 0;
    for i in first..steps {
        let upper = if i == 0 {
            1.0
        } else {
            table.steps[i - 1].sigma_hat
        };
        let result = engine
            .step(i, upper, &mut |rows| {
                progress.advance(rows as u64, &format!("step {}/{}", i + 1, steps))
            })
            .map_err(|e| match e {
                Error::Input(m) => Error::Input(format!("step {} of {steps}: {m}", i + 1)),
                e => e,
            })?;
        evaluations += result.evaluations;
        progress.skip_to((i + 1 - first) as u64 * per_step);
        table.steps.push(result.step);
        table.elapsed_seconds = already + start.elapsed().as_secs_f64();
        table.write(&out)?;
    }
    progress.finish();
    let elapsed = start.elapsed().as_secs_f64();
    print_summary(&table);
    println!(
        "{evaluations} model evaluations (candidate x sample rows) in {elapsed:.1} s: {:.1} per second",
        evaluations as f64 / elapsed.max(1e-9)
    );
    println!("wrote {}", out.display());
    if let Some(p) = &args.plot {
        plot::write(p, &table.steps)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn print_summary(table: &Table) {
    println!(
        "{:>4} {:>9} {:>10} {:>12} {:>12} {:>9} {:>9}",
        "step", "sigma", "sigma_hat", "loss(sigma)", "loss(hat)", "reduced", "stderr"
    );
    for (i, s) in table.steps.iter().enumerate() {
        let reduced = if s.loss_nominal > 0.0 {
            100.0 * (s.loss_nominal - s.loss_calibrated) / s.loss_nominal
        } else {
            0.0
        };
        println!(
            "{i:>4} {:>9.5} {:>10.5} {:>12.5e} {:>12.5e} {:>8.2}% {:>9.5}{}",
            s.sigma,
            s.sigma_hat,
            s.loss_nominal,
            s.loss_calibrated,
            reduced,
            s.sigma_hat_stderr,
            if s.edge {
                "  edge: optimum may lie outside the coarse window (try --widen)"
            } else {
                ""
            }
        );
    }
}
