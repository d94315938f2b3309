//! The command line: one file per subcommand.

use clap::{Parser, Subcommand};
use noiseshift_kernels::{Gpu, GpuOptions};

use crate::error::{Result, input};

pub mod calibrate;
pub mod decode;
pub mod devices;
pub mod generate;
pub mod inspect;
pub mod profile;
pub mod prompts;
pub mod ranges;

#[derive(Parser)]
#[command(
    name = "noiseshift",
    version,
    about = "Flow-matching text-to-image models (SD3, SD3.5) on any GPU through wgpu, made good at low resolution with NoiseShift",
    long_about = None
)]
pub struct Cli {
    /// Adapter to run on: an index from `noiseshift devices` or part of its name (e.g. "vulkan").
    /// Default: the first discrete GPU, then integrated, then software.
    #[arg(long, global = true, env = "NOISESHIFT_DEVICE")]
    pub device: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List the GPU adapters, their features and limits.
    Devices(devices::Args),
    /// Describe a model: family, configuration, dtypes, parameters, components.
    Inspect(inspect::Args),
    /// Sample latents and images from a prompt with the flow-matching Euler sampler.
    Generate(generate::Args),
    /// Decode a latents file with a model's VAE into PNG images.
    Decode(decode::Args),
    /// Write the built-in model as a diffusers pipeline folder (StableDiffusion3Pipeline), its
    /// calibration tables in calibrations/.
    ExportBuiltin(ExportArgs),
    /// Find NoiseShift's recalibrated noise levels for a model at one resolution.
    Calibrate(calibrate::Args),
    /// Time every kernel at representative model shapes, against the device's measured ceilings.
    Profile(profile::Args),
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The folder to create (it must not exist, or be empty).
    dir: std::path::PathBuf,
}

/// The files a run reads, which no output may overwrite: the model's transformer files and
/// whichever of `extra` were given.
pub(crate) fn input_paths<'a>(
    model: &'a crate::weights::ModelPath,
    extra: &[Option<&'a std::path::Path>],
) -> Vec<&'a std::path::Path> {
    let files = model.transformer_files.iter().map(|p| p.as_path());
    files.chain(extra.iter().flatten().copied()).collect()
}

/// Open the adapter the user asked for.
pub fn open_gpu(device: Option<&str>, profile: bool) -> Result<Gpu> {
    Ok(Gpu::new(&GpuOptions {
        device: device.map(str::to_string),
        profile,
        ..Default::default()
    })?)
}

/// Width and height in pixels: both positive multiples of `multiple` (8 x the patch size).
pub(crate) fn check_size(width: usize, height: usize, multiple: usize) -> Result<()> {
    if width == 0
        || height == 0
        || !width.is_multiple_of(multiple)
        || !height.is_multiple_of(multiple)
    {
        return input(format!(
            "width and height must be positive multiples of {multiple} pixels, got {width}x{height}"
        ));
    }
    Ok(())
}

/// Check an output path before any work: not a folder, its parent a folder (created when
/// missing), and not one of the run's inputs, which it would overwrite (compared after resolving
/// links, so `./a` and a symlink to `a` are caught too).
pub(crate) fn check_output(out: &std::path::Path, inputs: &[&std::path::Path]) -> Result<()> {
    if out.is_dir() {
        return input(format!(
            "the output {} is a folder: name a file",
            out.display()
        ));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent.exists() && !parent.is_dir() {
            return input(format!(
                "the output {}: {} is not a folder",
                out.display(),
                parent.display()
            ));
        }
        std::fs::create_dir_all(parent).map_err(|e| {
            crate::error::Error::Input(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let Ok(target) = out.canonicalize() else {
        return Ok(()); // not there yet: it cannot be an existing input
    };
    for i in inputs {
        if i.canonicalize().is_ok_and(|p| p == target) {
            return input(format!(
                "the output {} is also an input of this run ({}): choose another output path",
                out.display(),
                i.display()
            ));
        }
    }
    Ok(())
}

/// The VAE of `path` (its folder's vae/, or the single file's), checked against a
/// transformer taking `channels` latent channels at /8.
pub(crate) fn open_vae(
    path: &std::path::Path,
    config: Option<&serde_json::Value>,
    channels: usize,
) -> Result<crate::models::vae::locate::VaeSource> {
    let source = crate::models::vae::locate::VaeSource::open(path, config)?;
    let c = &source.config;
    if c.latent_channels != channels {
        return input(format!(
            "the VAE in {} has {} latent channels, the transformer {channels}",
            source.path.display(),
            c.latent_channels
        ));
    }
    if c.factor() != 8 {
        return input(format!(
            "the VAE in {} scales by {}, the transformer's latents by 8",
            source.path.display(),
            c.factor()
        ));
    }
    Ok(source)
}

pub fn run(cli: Cli) -> Result<()> {
    let device = cli.device.as_deref();
    match cli.command {
        Command::Devices(a) => devices::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Generate(a) => generate::run(a, device),
        Command::Decode(a) => decode::run(a, device),
        Command::ExportBuiltin(a) => {
            crate::builtin::export(&a.dir)?;
            eprintln!(
                "wrote {} (diffusers: StableDiffusion3Pipeline.from_pretrained(DIR, text_encoder_3=None, \
                 tokenizer_3=None), then max_sequence_length=8)",
                a.dir.display()
            );
            Ok(())
        }
        Command::Calibrate(a) => calibrate::run(a, device),
        Command::Profile(a) => profile::run(a, device),
    }
}
