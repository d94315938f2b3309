//! `noiseshift generate`: the Euler sampler over an SD3/SD3.5 or FLUX.1 transformer, from given
//! or seeded latents and a prompt (through the model's text encoders) or given embeddings,
//! optionally with a NoiseShift calibration table, then the VAE decoder and PNGs.

use std::path::{Path, PathBuf};

use crate::cli::prompts::TextArgs;
use crate::cli::{check_output, check_size, input_paths, open_gpu, open_vae, ranges};
use crate::error::{Result, input};
use crate::images::metadata::Metadata;
use crate::images::output::{self, check_out};
use crate::models::transformer::{Placement, Transformer, TransformerConfig};
use crate::models::vae::Parts;
use crate::models::vae::tiling::{self, TilingMode};
use crate::noise::seeded_noise;
use crate::noiseshift::table::{self, Request, Resolution, Table};
use crate::progress::Progress;
use crate::sampler::{Plan, sample};
use crate::tensor_file;
use crate::weights::{Component, ConfigOverride, ModelPath, WeightSet};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a diffusers pipeline folder, a transformer folder, a single-file checkpoint, or
    /// `builtin` (the default: the small model inside this program).
    #[arg(long, env = "NOISESHIFT_MODEL")]
    model: Option<PathBuf>,
    #[command(flatten)]
    text: TextArgs,
    /// Starting latents (safetensors: latents [B, C, h, w]); default: Gaussian noise from --seed.
    #[arg(long, conflicts_with = "seed")]
    latents: Option<PathBuf>,
    /// Seed of the starting noise (our own generator: the same seed gives the same latents here,
    /// not the same as PyTorch's).
    #[arg(long)]
    seed: Option<u64>,
    /// Image width in pixels (multiple of 16, 16..=16384). Default: the latents' width, else the
    /// model's native size.
    #[arg(long, value_parser = ranges::count(ranges::SIDE))]
    width: Option<usize>,
    /// Image height in pixels (multiple of 16, 16..=16384). Default: the latents' height, else the
    /// model's native size.
    #[arg(long, value_parser = ranges::count(ranges::SIDE))]
    height: Option<usize>,
    /// Sampling steps (1..=1000). Default: the model's own (noiseshift.json: the built-in model's
    /// 20), else the family's: 28 (SD3, FLUX.1-dev), 4 (FLUX.1-schnell).
    #[arg(long, value_parser = ranges::count(ranges::STEPS))]
    steps: Option<usize>,
    /// Guidance scale (0..=100). SD3: classifier-free guidance, <= 1 runs a single conditional
    /// pass; FLUX.1-dev: the guidance embedding's input (no second pass); FLUX.1-schnell: unused.
    /// Default: the model's own (the built-in model's 4), else 7 (SD3-medium's) or 3.5
    /// (FLUX.1-dev's).
    #[arg(long, value_parser = ranges::real(0.0, 100.0))]
    guidance: Option<f64>,
    /// Timestep shift (0.01..=100), static for any family. Default: the model's scheduler config
    /// (FLUX.1-dev's: a dynamic shift by image size), else 3.0 (SD3), the dynamic shift
    /// (FLUX.1-dev) or none (FLUX.1-schnell).
    #[arg(long, value_parser = ranges::real(0.01, 100.0))]
    shift: Option<f64>,
    /// Rows to sample when starting from --seed noise (1..=1024).
    #[arg(long, default_value_t = 1, conflicts_with = "latents",
          value_parser = ranges::count(ranges::BATCH))]
    batch: usize,
    /// Write the final latents here (safetensors, key `latents`).
    #[arg(long)]
    output_latents: Option<PathBuf>,
    /// Decode with the model's VAE and write a PNG (FILE-0.png .. FILE-(N-1).png for a batch
    /// of N), carrying the parameters as text chunks and an A1111-style `parameters` chunk.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a contact sheet of the batch as FILE-grid.png.
    #[arg(long, requires = "out")]
    grid: bool,
    /// The VAE for --out instead of the model's: a VAE folder or a single file (FLUX's
    /// ae.safetensors beside flux1-dev.safetensors, an SD3 checkpoint's first_stage_model.*).
    #[arg(long, requires = "out")]
    vae: Option<PathBuf>,
    /// Decode in overlapping tiles: `auto` when the activations would not fit the device.
    #[arg(long, value_enum, default_value = "auto")]
    vae_tiling: TilingMode,
    /// A config.json (transformer or VAE), or a diffusers folder whose transformer/ and vae/
    /// configs (and text_encoder*/ configs and tokenizer*/ folders: a single file carries no
    /// tokenizers) are used, for single-file checkpoints whose configuration cannot be
    /// inferred.
    #[arg(long)]
    config: Option<PathBuf>,
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

/// Refuse what needs components this model (or this version) does not have, naming them.
fn check_components(args: &Args, components: &[Component]) -> Result<()> {
    if let Some(out) = &args.out {
        check_out(out)?;
        if args.vae.is_none() && !components.contains(&Component::Vae) {
            return input(
                "--out needs a VAE and the model has none (component 'vae'): pass --vae PATH (FLUX: ae.safetensors) or use --output-latents FILE",
            );
        }
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
fn calibration_levels(
    args: &Args,
    path: &ModelPath,
    req: &Request<'_>,
) -> Result<(Vec<f64>, Option<PathBuf>)> {
    let steps = req.sigmas.len() - 1;
    let uncalibrated = req.sigmas[..steps].to_vec();
    match args.calibration.as_str() {
        "none" => Ok((uncalibrated, None)),
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
                        return Ok((levels, Some(candidate)));
                    }
                    Err(e) => eprintln!("calibration: ignoring {}: {e}", candidate.display()),
                }
            }
            eprintln!(
                "calibration: no table for {}x{} at {steps} steps; sampling uncalibrated (see `noiseshift calibrate`)",
                req.resolution.width, req.resolution.height
            );
            Ok((uncalibrated, None))
        }
        file => {
            let file = Path::new(file);
            let (levels, note) =
                Table::read(file)?.levels(file, req, args.calibration_interpolate)?;
            eprintln!(
                "calibration: {}",
                note.unwrap_or_else(|| file.display().to_string())
            );
            Ok((levels, Some(file.to_path_buf())))
        }
    }
}

pub fn run(args: Args, device: Option<&str>) -> Result<()> {
    let path = crate::builtin::resolve(args.model.as_deref())?;
    let weights = WeightSet::open(&path.transformer_files)?;
    check_components(&args, &path.components(&weights))?;
    args.text.check()?;
    if args.output_latents.is_none() && args.out.is_none() && args.text.output_embeds.is_none() {
        return input(
            "nothing to write: pass --out FILE.png, --output-latents FILE or --output-embeds FILE",
        );
    }
    let mut inputs = input_paths(
        &path,
        &[
            args.latents.as_deref(),
            args.text.embeds.as_deref(),
            args.config.as_deref(),
            args.vae.as_deref(),
        ],
    );
    let table_file = Path::new(&args.calibration);
    if !matches!(args.calibration.as_str(), "auto" | "none") {
        inputs.push(table_file);
    }
    for out in [&args.out, &args.output_latents, &args.text.output_embeds]
        .into_iter()
        .flatten()
    {
        check_output(out, &inputs)?;
    }
    let configs = ConfigOverride::read(args.config.as_deref())?;
    let tconfig = configs.transformer.as_ref().or(path.config.as_ref());
    let config = TransformerConfig::resolve(&weights, tconfig)?;
    let family = config.defaults();
    let steps = args.steps.or(path.defaults.steps).unwrap_or(family.steps);
    let guidance = args
        .guidance
        .or(path.defaults.guidance)
        .unwrap_or(family.guidance);
    if steps == 0 {
        return input("--steps must be at least 1");
    }
    if args.batch == 0 {
        return input("--batch must be at least 1");
    }
    // The VAE is checked against the transformer before any sampling.
    let vae = match &args.out {
        Some(_) => Some(open_vae(
            args.vae.as_deref().unwrap_or(&path.path),
            configs.vae.as_ref(),
            config.latent_channels(),
        )?),
        None => None,
    };
    let multiple = config.pixel_multiple();

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
            let native = config.native_pixels();
            let (width, height) = (args.width.unwrap_or(native), args.height.unwrap_or(native));
            check_size(width, height, multiple)?;
            seeded_noise(
                args.seed.unwrap_or(0),
                &[args.batch, config.latent_channels(), height / 8, width / 8],
            )
        }
    };
    let scheduler = config.scheduler(&path, args.shift);
    let shift = scheduler.shift();
    if !(shift > 0.0 && shift.is_finite()) {
        return input(format!("--shift must be a positive number, got {shift}"));
    }
    let resolution = Resolution {
        width: 8 * latents.shape[3],
        height: 8 * latents.shape[2],
    };
    let (sigmas, mu) = scheduler.sigmas(steps, resolution.width, resolution.height);
    let request = Request {
        fingerprint: &weights.fingerprint(),
        resolution,
        sigmas: &sigmas,
        shift,
        mu,
    };
    let (levels, table) = calibration_levels(&args, &path, &request)?;

    let gpu = open_gpu(device, args.profile || args.trace.is_some())?;
    let batch = latents.shape[0];
    let guided = config.cfg(guidance);
    if let TransformerConfig::Flux(c) = &config {
        if args.text.negative_prompt.is_some() {
            eprintln!("note: FLUX runs no unconditional pass: --negative-prompt is not used");
        }
        if !c.guidance_embeds && args.guidance.is_some() {
            eprintln!("note: FLUX.1-schnell has no guidance input: --guidance is not used");
        }
    }
    // The text encoders run (and free their weights) before the transformer loads.
    let config_root = args.config.as_deref().filter(|p| p.is_dir());
    let host = args
        .text
        .host_prompts(&gpu, &path, config_root, &weights, &config, guided)?;
    if args.output_latents.is_none() && args.out.is_none() {
        return Ok(());
    }
    let prompts = host.upload(&gpu, batch)?;
    eprintln!("loading {} on {}", path.path.display(), gpu.adapter.label());
    let place = Placement {
        offload: args.text.encoders.offload,
        device_memory: crate::cli::prompts::device_memory(&gpu)?,
        activations: config.activation_bytes(
            if guided { 2 * batch } else { batch },
            latents.shape[2],
            latents.shape[3],
            host.cond.embeds.shape[1],
        ),
    };
    let model = Transformer::load(&gpu, &weights, tconfig, place)?;
    model.check_latents(&latents.shape)?;
    let x0 = latents.upload(&gpu)?;
    let mut progress = Progress::new("sampling", steps as u64);
    let plan = Plan {
        sigmas: &sigmas,
        levels: &levels,
        guidance,
    };
    let out = sample(&gpu, &model, &x0, &prompts, &plan, |i| {
        gpu.finish()?;
        progress.advance(1, &format!("step {} sigma {:.4}", i + 1, sigmas[i]));
        Ok(())
    })?;
    progress.finish();
    let result = tensor_file::download(&gpu, &out)?;
    drop((out, x0, prompts, model));
    gpu.trim_memory();
    if let Some(output) = &args.output_latents {
        tensor_file::write(output, &[("latents", &result)])?;
        let schedule = match mu {
            Some(mu) => format!("dynamic shift mu {mu:.4}"),
            None => format!("shift {shift}"),
        };
        eprintln!(
            "wrote {} ({} x {:?}) after {} steps in {:.1} s ({schedule}, guidance {})",
            output.display(),
            batch,
            &result.shape[1..],
            steps,
            progress.elapsed(),
            guidance
        );
    }
    if let (Some(out), Some(source)) = (&args.out, vae) {
        let vae = source.load(&gpu, Parts::Decoder)?;
        let images = tiling::decode_planned(&gpu, &vae, &result, args.vae_tiling)?;
        let meta = Metadata {
            prompt: args.text.prompt.clone().unwrap_or_default(),
            negative_prompt: args.text.negative_prompt.clone().unwrap_or_default(),
            seed: match &args.latents {
                Some(_) => None,
                None => Some(args.seed.unwrap_or(0)),
            },
            source: args
                .latents
                .as_ref()
                .map(|p| format!("latents {}", p.display()))
                .or_else(|| {
                    args.text
                        .embeds
                        .as_ref()
                        .map(|p| format!("embeds {}", p.display()))
                }),
            steps,
            guidance,
            distilled_guidance: matches!(&config, TransformerConfig::Flux(c) if c.guidance_embeds),
            shift,
            mu,
            width: resolution.width,
            height: resolution.height,
            model: path.name(),
            fingerprint: weights.fingerprint(),
            calibration: table,
        };
        let written = output::write_all(out, &images, args.grid, &|r| meta.chunks(r))?;
        for p in written {
            eprintln!("wrote {}", p.display());
        }
    }
    if args.profile || args.trace.is_some() {
        crate::profiling::report_run(&gpu, args.profile, args.trace.as_deref())?;
    }
    Ok(())
}
