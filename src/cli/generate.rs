//! `noiseshift generate`: the Euler sampler over an SD3/SD3.5 transformer, from given or seeded
//! latents and given prompt embeddings, optionally with a NoiseShift calibration table.

use std::path::{Path, PathBuf};

use noiseshift_kernels::Gpu;

use crate::cli::{check_size, open_gpu, open_vae};
use crate::error::{Error, Result, input};
use crate::images::metadata::Metadata;
use crate::images::output::{self, check_out};
use crate::models::mmdit::{Mmdit, TextConditioning};
use crate::models::vae::tiling::{self, TilingMode};
use crate::models::vae::{Parts, Vae};
use crate::noise::seeded_noise;
use crate::noiseshift::table::{self, Request, Resolution, Table};
use crate::progress::Progress;
use crate::sampler::{Plan, Prompts, sample};
use crate::schedule::{DEFAULT_SHIFT, sd3_sigmas};
use crate::tensor_file;
use crate::weights::{Component, ConfigOverride, ModelPath, WeightSet};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a diffusers pipeline folder, a transformer folder, or a single-file checkpoint.
    #[arg(long, env = "NOISESHIFT_MODEL")]
    model: Option<PathBuf>,
    /// Text prompt (needs the model's text encoders; use --embeds until they are supported).
    #[arg(long)]
    prompt: Option<String>,
    /// Negative prompt for guidance (needs the text encoders, like --prompt).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Prompt embeddings (safetensors: prompt_embeds [B, L, D], pooled_prompt_embeds [B, P], and
    /// for guidance > 1 negative_prompt_embeds, negative_pooled_prompt_embeds). Batch 1 is shared
    /// by every latent row.
    #[arg(long)]
    embeds: Option<PathBuf>,
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
    /// Write the prompt embeddings computed from --prompt here.
    #[arg(long)]
    output_embeds: Option<PathBuf>,
    /// Decode with the model's VAE and write a PNG (FILE-0.png .. FILE-(N-1).png for a batch
    /// of N), carrying the parameters as text chunks and an A1111-style `parameters` chunk.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a contact sheet of the batch as FILE-grid.png.
    #[arg(long, requires = "out")]
    grid: bool,
    /// Decode in overlapping tiles: `auto` when the activations would not fit the device.
    #[arg(long, value_enum, default_value = "auto")]
    vae_tiling: TilingMode,
    /// A config.json (transformer or VAE), or a diffusers folder whose transformer/ and vae/
    /// configs are used, for single-file checkpoints whose configuration cannot be inferred.
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

/// The embeddings file's conditional and (when guidance needs them) unconditional parts,
/// expanded to `batch` rows when the file holds one.
fn load_prompts(gpu: &Gpu, path: &Path, batch: usize, guided: bool) -> Result<Prompts> {
    let mut t = tensor_file::read(path)?;
    let mut pair = |embeds: &str, pooled: &str| -> Result<TextConditioning> {
        let e = tensor_file::take(&mut t, embeds, path)?;
        let p = tensor_file::take(&mut t, pooled, path)?;
        if e.shape.len() != 3 || p.shape.len() != 2 || e.shape[0] != p.shape[0] {
            return input(format!(
                "{}: {embeds} {:?} and {pooled} {:?} must be [B, L, D] and [B, P]",
                path.display(),
                e.shape,
                p.shape
            ));
        }
        let rows = e.shape[0];
        let index: Vec<usize> = match rows {
            r if r == batch => (0..batch).collect(),
            1 => vec![0; batch],
            r => {
                return input(format!(
                    "{}: {embeds} has batch {r}; expected {batch} (the latents' batch) or 1",
                    path.display()
                ));
            }
        };
        Ok(TextConditioning {
            embeds: e.gather(&index).upload(gpu)?,
            pooled: p.gather(&index).upload(gpu)?,
        })
    };
    let cond = pair("prompt_embeds", "pooled_prompt_embeds")?;
    let uncond = if guided {
        Some(
            pair("negative_prompt_embeds", "negative_pooled_prompt_embeds").map_err(|e| {
                Error::Input(format!(
                    "guidance > 1 needs negative embeddings ({e}); add them or pass --guidance 1"
                ))
            })?,
        )
    } else {
        None
    };
    Ok(Prompts { cond, uncond })
}

/// Refuse what needs components this model (or this version) does not have, naming them.
fn check_components(args: &Args, components: &[Component]) -> Result<()> {
    if args.prompt.is_some() || args.negative_prompt.is_some() || args.output_embeds.is_some() {
        let missing: Vec<&str> = [
            Component::TextEncoder,
            Component::TextEncoder2,
            Component::TextEncoder3,
        ]
        .iter()
        .filter(|c| !components.contains(c))
        .map(|c| c.name())
        .collect();
        if !missing.is_empty() {
            return input(format!(
                "--prompt needs the text encoders, and the model lacks {}; pass --embeds FILE instead",
                missing.join(", ")
            ));
        }
        return input(
            "running the text encoders is not supported yet; pass --embeds FILE instead of --prompt",
        );
    }
    if let Some(out) = &args.out {
        check_out(out)?;
        if !components.contains(&Component::Vae) {
            return input(
                "--out needs the model's VAE (component 'vae'), which it lacks; use --output-latents FILE",
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
    let Some(model_path) = &args.model else {
        return input("no model given: pass --model MODEL (or set NOISESHIFT_MODEL)");
    };
    let path = ModelPath::resolve(model_path)?;
    let weights = WeightSet::open(&path.transformer_files)?;
    check_components(&args, &path.components(&weights))?;
    if args.output_latents.is_none() && args.out.is_none() {
        return input("nothing to write: pass --out FILE.png or --output-latents FILE");
    }
    let configs = ConfigOverride::read(args.config.as_deref())?;
    let tconfig = configs.transformer.as_ref().or(path.config.as_ref());
    let Some(embeds_path) = &args.embeds else {
        return input("no conditioning: pass --embeds FILE (prompt_embeds, pooled_prompt_embeds)");
    };
    if args.steps == 0 {
        return input("--steps must be at least 1");
    }
    if args.batch == 0 {
        return input("--batch must be at least 1");
    }
    let (config, _) = crate::models::mmdit::MmditConfig::resolve(&weights, tconfig)?;
    // The VAE is checked against the transformer before any sampling.
    let vae = match &args.out {
        Some(_) => Some(open_vae(&path, configs.vae.as_ref(), config.in_channels)?),
        None => None,
    };
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
    let (levels, table) = calibration_levels(&args, &path, &request)?;

    let gpu = open_gpu(device, args.profile || args.trace.is_some())?;
    let batch = latents.shape[0];
    let guided = args.guidance > 1.0;
    let prompts = load_prompts(&gpu, embeds_path, batch, guided)?;
    eprintln!("loading {} on {}", path.path.display(), gpu.adapter.label());
    let model = Mmdit::load(&gpu, &weights, tconfig)?;
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
    drop((out, x0, prompts, model));
    gpu.trim_memory();
    if let Some(output) = &args.output_latents {
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
    }
    if let (Some(out), Some(source)) = (&args.out, vae) {
        let vae = Vae::load(
            &gpu,
            &source.weights,
            &source.keys,
            source.config,
            Parts::Decoder,
        )?;
        let images = tiling::decode_planned(&gpu, &vae, &result, args.vae_tiling)?;
        let meta = Metadata {
            prompt: args.prompt.clone().unwrap_or_default(),
            negative_prompt: args.negative_prompt.clone().unwrap_or_default(),
            seed: match &args.latents {
                Some(_) => None,
                None => Some(args.seed.unwrap_or(0)),
            },
            source: args
                .latents
                .as_ref()
                .map(|p| format!("latents {}", p.display()))
                .or_else(|| {
                    args.embeds
                        .as_ref()
                        .map(|p| format!("embeds {}", p.display()))
                }),
            steps: args.steps,
            guidance: args.guidance,
            shift,
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
