//! `noiseshift decode`: a latents file through a model's VAE decoder to PNG files.

use std::path::PathBuf;

use crate::cli::open_gpu;
use crate::error::Result;
use crate::images::metadata::file_fingerprint;
use crate::images::output::{self, check_out};
use crate::models::vae::Parts;
use crate::models::vae::locate::VaeSource;
use crate::models::vae::tiling::{self, TilingMode};
use crate::tensor_file;
use crate::weights::ConfigOverride;

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers pipeline folder (its vae/), a VAE folder, or a single file holding a VAE
    /// (an SD3 checkpoint's first_stage_model.*, FLUX's ae.safetensors).
    #[arg(long, env = "NOISESHIFT_MODEL")]
    model: Option<PathBuf>,
    /// Latents to decode (safetensors: latents [B, C, h, w], as the model sees them, scaled).
    #[arg(long)]
    latents: PathBuf,
    /// The PNG to write (FILE-0.png .. FILE-(N-1).png for a batch of N).
    #[arg(long)]
    out: PathBuf,
    /// Also write a contact sheet of the batch as FILE-grid.png.
    #[arg(long)]
    grid: bool,
    /// Decode in overlapping tiles: `auto` when the activations would not fit the device.
    #[arg(long, value_enum, default_value = "auto")]
    vae_tiling: TilingMode,
    /// The VAE's config.json (or a diffusers folder with vae/config.json) for single files
    /// whose configuration cannot be inferred.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args, device: Option<&str>) -> Result<()> {
    check_out(&args.out)?;
    crate::cli::check_output(&args.out, &[&args.latents])?;
    let model = crate::builtin::path(args.model.as_deref())?;
    let configs = ConfigOverride::read(args.config.as_deref())?;
    let source = VaeSource::open(&model, configs.vae.as_ref())?;
    let latents = tensor_file::take(
        &mut tensor_file::read(&args.latents)?,
        "latents",
        &args.latents,
    )?;
    let gpu = open_gpu(device, false)?;
    let vae = source.load(&gpu, Parts::Decoder)?;
    vae.check_latents(&latents.shape)?;
    let images = tiling::decode_planned(&gpu, &vae, &latents, args.vae_tiling)?;
    let size = format!("{}x{}", images.shape[3], images.shape[2]);
    let chunks = |_: Option<usize>| {
        vec![
            (
                "source".to_string(),
                format!("latents {}", args.latents.display()),
            ),
            (
                "latents_fingerprint".to_string(),
                file_fingerprint(&args.latents),
            ),
            ("size".to_string(), size.clone()),
            ("vae".to_string(), source.path.display().to_string()),
            ("vae_fingerprint".to_string(), source.weights.fingerprint()),
            (
                "software".to_string(),
                format!("noiseshift {}", env!("CARGO_PKG_VERSION")),
            ),
        ]
    };
    for p in output::write_all(&args.out, &images, args.grid, &chunks)? {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
