//! `noiseshift calibrate`: find NoiseShift's sigma_hat for every step of a model's schedule at
//! one resolution and write the calibration table (saved after every step; `--resume` goes on
//! from where an interrupted run stopped).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::prompts::EncoderArgs;
use crate::cli::{check_output, check_size, input_paths, open_gpu, open_vae, ranges};
use crate::error::{Error, Result, input};
use crate::models::transformer::{Placement, Transformer, TransformerConfig};
use crate::models::vae::Parts;
use crate::models::vae::tiling::TilingMode;
use crate::noiseshift::dataset::{Dataset, Expect};
use crate::noiseshift::images::{self, ImagesRequest};
use crate::noiseshift::search::{Engine, Memo, SearchConfig};
use crate::noiseshift::selfgen::{self, SelfRequest};
use crate::noiseshift::table::{self, Adaptive, ModelInfo, Resolution, Schedule, Search, Table};
use crate::noiseshift::{plot, velocity::TransformerVelocity};
use crate::progress::Progress;
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
    /// (noiseshift.json: the built-in model's 20), else the family's (28; FLUX.1-schnell 4).
    #[arg(long, value_parser = ranges::count(ranges::STEPS))]
    steps: Option<usize>,
    /// Timestep shift (0.01..=100), static for any family. Default: the model's scheduler
    /// config (FLUX.1-dev's: the dynamic shift for this size, recorded as mu), else 3.0 (SD3).
    #[arg(long, value_parser = ranges::real(0.01, 100.0))]
    shift: Option<f64>,
    /// Calibration data: safetensors with x0 [N, C, h, w], optional noise, and per-sample
    /// prompt_embeds / pooled_prompt_embeds.
    #[arg(long, conflicts_with_all = ["images", "self_images"], required_unless_present_any = ["images", "self_images"])]
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
    /// No data set at hand: the model generates N images at its native resolution (prompts
    /// from --prompts, else a built-in list; image k from --seed + k; its default steps,
    /// guidance and shift, uncalibrated), each downsampled to --width x --height as --images
    /// would be, encoded by its VAE, and captioned by its prompt (1..=100000).
    #[arg(long = "self", value_name = "N", conflicts_with = "images",
          value_parser = ranges::count(1..=100_000))]
    self_images: Option<usize>,
    /// Prompts for --self, one per line (blank lines skipped), used in turn.
    #[arg(long, requires = "self_images")]
    prompts: Option<PathBuf>,
    /// Sample the latent distribution of each image (seeded) instead of taking its mean.
    #[arg(long, requires = "images")]
    sample_latents: bool,
    /// The VAE for --images and --self instead of the model's: a VAE folder or a single file
    /// (FLUX's ae.safetensors beside flux1-dev.safetensors).
    #[arg(long)]
    vae: Option<PathBuf>,
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
    /// Samples to use (1..=100000; default: all in the dataset; for --images the first 200
    /// usable; --self N makes N).
    #[arg(long, value_parser = ranges::count(1..=100_000), conflicts_with = "self_images")]
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
    /// Search further out while the coarse winner sits on the window's edge (grid); let the
    /// adaptive search leave the grid's windows (without it, both answer within coarse + fine
    /// window of sigma_i and flag the edge alike).
    #[arg(long)]
    widen: bool,
    /// `grid`: every coarse and fine candidate on every sample (NOISESHIFT.md). `adaptive`: each
    /// step starts where the earlier steps' offsets point (the first from a pilot race) and
    /// scores a few levels on all samples, each where the loss of the velocity interpolated
    /// between the levels scored so far is least (BENCHMARKS.md: on the closed-form model
    /// sigma_hat within a fine stride of the grid's on 94 % of steps at 7-10 % of its
    /// evaluations, 8.4 % over all cases, losses within 0.003 %; on the built-in model losses
    /// 0.4-1.2 % above the grid's at 10-14 %, where the grid finds better local minima; not
    /// the bar there, so not the default). Keeps the velocities of those levels in
    /// host memory (levels x samples x latent size x 4 bytes).
    #[arg(long, value_enum, default_value_t = SearchMode::Grid)]
    search: SearchMode,
    /// Adaptive: spacing of the pilot race's candidates across the coarse window (0.0001..=1).
    #[arg(long, default_value_t = 0.01, value_parser = ranges::real(1e-4, 1.0))]
    pilot_stride: f64,
    /// Adaptive: samples every pilot candidate is first scored on; survivors get twice as many
    /// each round, up to a quarter of the samples (1..=100000).
    #[arg(long, default_value_t = 8, value_parser = ranges::count(1..=100_000))]
    race_samples: usize,
    /// Adaptive: a pilot candidate leaves the race when its mean loss difference to the best
    /// exceeds this many standard errors of the paired differences (0.5..=20).
    #[arg(long, default_value_t = 3.0, value_parser = ranges::real(0.5, 20.0))]
    race_z: f64,
    /// Adaptive: line-search steps on all samples after the start, at most (0..=100).
    #[arg(long, default_value_t = 8, value_parser = ranges::count(0..=100))]
    refinements: usize,
    /// Adaptive: race every step instead of starting each after the first from the earlier
    /// steps' offsets sigma_hat - sigma, extrapolated.
    #[arg(long)]
    no_follow: bool,
    /// Adaptive: with the trend start, still race every step over the coarse window and start
    /// from the race's basin where it left the trend's neighbourhood (finds optima that jump).
    #[arg(long)]
    race_every_step: bool,
    /// Adaptive: stop the line search where its next level is one fine stride from the best
    /// and the interpolated loss there is lower by at most this fraction of the best's, not
    /// worth a level on all samples (0..=0.01; 0 runs every such level).
    #[arg(long, default_value_t = 1e-4, value_parser = ranges::real(0.0, 0.01))]
    stop_gain: f64,
    /// Rows (candidate x sample) per model evaluation. Default: the most the device's binding
    /// limits allow for this model and resolution (1..=65536).
    #[arg(long, value_parser = ranges::count(1..=65_536))]
    batch: Option<usize>,
    /// Guidance scale during calibration (0..=100). SD3: classifier-free, > 1 needs negative
    /// embeddings in the dataset (default 1, none); FLUX.1-dev: its guidance input (default 3.5).
    #[arg(long, value_parser = ranges::real(0.0, 100.0))]
    guidance: Option<f64>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SearchMode {
    Adaptive,
    Grid,
}

/// The search settings recorded in (and checked against) the table.
fn search_record(args: &Args, guidance: f64, samples: usize, dataset: &str) -> Search {
    let adaptive = (args.search == SearchMode::Adaptive).then_some(Adaptive {
        pilot_stride: args.pilot_stride,
        first_samples: args.race_samples,
        z: args.race_z,
        refinements: args.refinements,
        follow: !args.no_follow,
        race_every_step: args.race_every_step,
        stop_gain: args.stop_gain,
    });
    Search {
        mode: if adaptive.is_some() {
            "adaptive"
        } else {
            "grid"
        }
        .into(),
        adaptive,
        coarse_window: args.coarse_window,
        coarse_stride: args.coarse_stride,
        fine_window: args.fine_window,
        fine_stride: args.fine_stride,
        widen: args.widen,
        samples,
        seed: args.seed,
        guidance,
        dataset: dataset.to_string(),
    }
}

/// Images per sampling batch of --self.
const SELF_BATCH: usize = 8;

/// The prompts of a --prompts file: one per line, blank lines skipped.
fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = crate::files::read_text(path)?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return input(format!("{}: no prompt in it", path.display()));
    }
    Ok(prompts)
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
    let config = TransformerConfig::resolve(&weights, tconfig)?;
    check_size(args.width, args.height, config.pixel_multiple())?;
    let family = config.defaults();
    let steps = args.steps.or(path.defaults.steps).unwrap_or(family.steps);
    // FLUX.1-dev always takes a guidance value; SD3 calibrates without guidance by default.
    let guidance = args.guidance.unwrap_or(match &config {
        TransformerConfig::Flux(_) => family.guidance,
        TransformerConfig::Mmdit(_) => 1.0,
    });
    let cfg = config.cfg(guidance);
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
    let scheduler = config.scheduler(&path, args.shift);
    let shift = scheduler.shift();
    if !(shift > 0.0 && shift.is_finite()) {
        return input(format!("--shift must be a positive number, got {shift}"));
    }
    let expect = Expect {
        channels: config.latent_channels(),
        latent_h: args.height / 8,
        latent_w: args.width / 8,
        joint_dim: config.text_dims().0,
        pooled_dim: config.text_dims().1,
    };
    let resolution = Resolution {
        width: args.width,
        height: args.height,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| table::default_path(Path::new("."), &path.name(), resolution, steps));
    let mut inputs = input_paths(
        &path,
        &[
            args.dataset.as_deref(),
            args.captions.as_deref(),
            args.embeds.as_deref(),
            args.prompts.as_deref(),
            args.vae.as_deref(),
        ],
    );
    check_output(&out, &inputs)?;
    if let Some(plot) = &args.plot {
        inputs.push(&out);
        check_output(plot, &inputs)?;
    }
    let self_prompts = match (args.self_images, &args.prompts) {
        (None, _) => None,
        (Some(_), Some(file)) => Some((read_prompts(file)?, file.display().to_string())),
        (Some(_), None) => {
            let list = if path.name() == crate::builtin::NAME {
                crate::builtin::PROMPTS
            } else {
                selfgen::EVERYDAY
            };
            let what = "the built-in prompt list".to_string();
            Some((list.iter().map(|p| p.to_string()).collect(), what))
        }
    };
    let vae_path = args.vae.as_deref().unwrap_or(&path.path);
    let gpu = open_gpu(device, false)?;
    // Activations of `rows` rows of `side` latents (calibration's own batches are sized to
    // the device's bindings after the model loads: one row is what loading must allow for).
    let place = |gpu: &noiseshift_kernels::Gpu, rows: usize, (h, w)| -> Result<Placement> {
        let text = config.defaults().max_sequence_length + 77;
        Ok(Placement {
            offload: args.encoders.offload,
            device_memory: crate::cli::prompts::device_memory(gpu)?,
            activations: config.activation_bytes(rows, h, w, text),
        })
    };
    let native_latents = (config.native_pixels() / 8, config.native_pixels() / 8);
    // --self needs the transformer to make its data; the others load it after theirs.
    let mut loaded = None;
    let data = match (&args.dataset, &args.images, args.self_images) {
        (Some(file), _, _) => Dataset::load(file, args.samples, args.seed, &expect)?,
        (None, None, Some(count)) => {
            let (prompts, prompts_source) = self_prompts.expect("read above");
            let source = open_vae(vae_path, configs.vae.as_ref(), config.latent_channels())?;
            let encoder = args.encoders.prompt_encoder(
                &gpu,
                &path,
                args.config.as_deref().filter(|p| p.is_dir()),
                &weights,
                &config,
            )?;
            eprintln!("loading {} on {}", path.path.display(), gpu.adapter.label());
            let model = Transformer::load(
                &gpu,
                &weights,
                tconfig,
                place(&gpu, SELF_BATCH, native_latents)?,
            )?;
            let vae = source.load(&gpu, Parts::Both)?;
            let native = config.native_pixels();
            let native_steps = path.defaults.steps.unwrap_or(family.steps);
            let native_scheduler = config.scheduler(&path, None);
            let (native_sigmas, _) = native_scheduler.sigmas(native_steps, native, native);
            let req = SelfRequest {
                count,
                prompts: &prompts,
                prompts_source,
                seed: args.seed,
                native: (native, native),
                target: (args.width, args.height),
                sigmas: &native_sigmas,
                shift: native_scheduler.shift(),
                guidance: path.defaults.guidance.unwrap_or(family.guidance),
                batch: SELF_BATCH,
                tiling: args.vae_tiling,
                negative: cfg,
            };
            let data = selfgen::dataset(&gpu, &model, &vae, &encoder, &req)?;
            data.check(&expect)?;
            drop((vae, encoder));
            gpu.trim_memory();
            loaded = Some(model);
            data
        }
        (None, Some(dir), _) => {
            // The folder and its captions are checked before the VAE is looked for.
            let files = images::list(dir)?;
            if let Some(c) = &args.captions {
                images::read_captions(c, &files)?;
            }
            let source = open_vae(vae_path, configs.vae.as_ref(), config.latent_channels())?;
            let vae = source.load(&gpu, Parts::Encoder)?;
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
                negative: cfg,
            };
            let data = images::dataset(&gpu, &vae, &req)?;
            data.check(&expect)?;
            gpu.trim_memory();
            data
        }
        (None, None, None) => unreachable!("clap requires --dataset, --images or --self"),
    };
    let negative = if cfg {
        let Some((e, p)) = data.negative.clone() else {
            return input(
                "--guidance > 1 needs negative_prompt_embeds and negative_pooled_prompt_embeds in the dataset",
            );
        };
        Some((e, p))
    } else {
        None
    };
    let (sigmas, mu) = scheduler.sigmas(steps, args.width, args.height);
    let samples = data.x0.shape[0];

    let mut table = Table {
        format: table::FORMAT.into(),
        model: ModelInfo {
            family: config.family().into(),
            name: path.name(),
            fingerprint: weights.fingerprint(),
        },
        resolution,
        schedule: Schedule { steps, shift, mu },
        search: search_record(&args, guidance, samples, &data.description),
        steps: Vec::new(),
        evaluations: 0,
        partial: None,
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

    let model = match loaded {
        Some(model) => model,
        None => {
            eprintln!("loading {} on {}", path.path.display(), gpu.adapter.label());
            Transformer::load(
                &gpu,
                &weights,
                tconfig,
                place(&gpu, 1, (expect.latent_h, expect.latent_w))?,
            )?
        }
    };
    let velocity = TransformerVelocity::new(&model, data.embeds, data.pooled, negative, guidance);
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
        adaptive: table.search.adaptive.clone(),
        batch,
        bootstrap: args.bootstrap,
        seed: args.seed,
    };
    let engine = Engine::new(&gpu, &velocity, data.x0, data.noise, search)?;
    let first = table.steps.len();
    eprintln!(
        "calibrating steps {first}..{} at {}x{} with {samples} samples, {batch} rows per forward, {} search",
        steps, args.width, args.height, table.search.mode
    );
    let start = Instant::now();
    let already = table.elapsed_seconds;
    // A run stopped mid-step left that step's evaluated rows: the search replays them.
    let mut memo = match table.partial.take() {
        Some(p) => Memo::from_partial(&p),
        None => Memo::default(),
    };
    let resumed_rows = memo.rows();
    // rows_per_step is an estimate: the adaptive search decides as it goes.
    let per_step = engine.rows_per_step() as u64;
    let mut progress = Progress::new("calibrating", (steps - first) as u64 * per_step);
    let mut ran = 0;
    for i in first..steps {
        // The steps before bound this one and give the adaptive search its start.
        let earlier: Vec<f64> = table.steps.iter().map(|s| s.sigma_hat).collect();
        let label = format!("step {}/{}", i + 1, steps);
        let result = engine
            .step(i, &earlier, &mut memo, &mut |rows, memo| {
                ran += rows;
                progress.advance(rows as u64, &label);
                // The step in progress is saved after every forward, for --resume mid-step.
                table.partial = Some(memo.partial(i));
                table.elapsed_seconds = already + start.elapsed().as_secs_f64();
                table.write(&out)
            })
            .map_err(|e| match e {
                Error::Input(m) => Error::Input(format!("step {} of {steps}: {m}", i + 1)),
                e => e,
            })?;
        memo = Memo::default();
        let finished = (i + 1 - first) as u64;
        if table.search.adaptive.is_some() {
            // The adaptive search's cost is known only as it goes: the rest at the mean so far.
            let mean = (ran as u64 / finished).max(1);
            progress.set_total(ran as u64 + (steps - i - 1) as u64 * mean);
        } else {
            progress.skip_to(finished * per_step);
        }
        table.partial = None;
        table.evaluations += result.evaluations;
        table.steps.push(result.step);
        table.elapsed_seconds = already + start.elapsed().as_secs_f64();
        table.write(&out)?;
    }
    progress.finish();
    let elapsed = start.elapsed().as_secs_f64();
    print_summary(&table);
    let resumed = match resumed_rows {
        0 => String::new(),
        r => format!(" (and {r} saved by the interrupted run)"),
    };
    println!(
        "{ran} model evaluations (candidate x sample rows) in {elapsed:.1} s: {:.1} per second{resumed}",
        ran as f64 / elapsed.max(1e-9)
    );
    let grid = steps * engine.grid_rows_per_step();
    println!(
        "the table's search cost {} evaluations in all; the exhaustive grid costs up to {grid} ({:.1} %)",
        table.evaluations,
        100.0 * table.evaluations as f64 / grid as f64
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
