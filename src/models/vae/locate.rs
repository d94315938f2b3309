//! Where a model's VAE lives: a pipeline folder's `vae/`, a diffusers VAE folder itself
//! (config.json of an AutoencoderKL), or a single file: an original SD3 checkpoint
//! (`first_stage_model.*`) or FLUX's `ae.safetensors` (keys without prefix). Single files
//! carry no config: it is inferred from the shapes (or given with `--config`), the latent
//! scale and shift by family (SD3 for a prefixed checkpoint, FLUX for unprefixed keys).

use std::path::{Path, PathBuf};

use noiseshift_kernels::Gpu;

use crate::error::{Result, input};
use crate::models::vae::config::{DIFFUSERS_SCALE_SHIFT, FLUX_SCALE_SHIFT, SD3_SCALE_SHIFT};
use crate::models::vae::{Parts, Vae, VaeConfig, VaeKeys};
use crate::weights::WeightSet;
use crate::weights::discover::{folder_weights, read_json};

/// A VAE's weights, key layout and configuration, before upload.
pub struct VaeSource {
    pub weights: WeightSet,
    pub keys: VaeKeys,
    pub config: VaeConfig,
    /// Where it came from, for messages and `inspect`.
    pub path: PathBuf,
}

fn is_vae_config(json: &serde_json::Value) -> bool {
    json.get("_class_name").and_then(|v| v.as_str()) == Some("AutoencoderKL")
}

impl VaeSource {
    /// Upload the `parts` this run needs.
    pub fn load(&self, gpu: &Gpu, parts: Parts) -> Result<Vae> {
        Vae::load(gpu, &self.weights, &self.keys, self.config.clone(), parts)
    }

    /// The VAE of `path` (a pipeline folder, a VAE folder or a single file); `config` is a
    /// VAE config.json given on the command line (`--config`), which wins over inference.
    pub fn open(path: &Path, config: Option<&serde_json::Value>) -> Result<VaeSource> {
        if !path.exists() {
            return input(format!("model path {} does not exist", path.display()));
        }
        let folder = if path.join("model_index.json").exists() {
            let vae = path.join("vae");
            if !vae.is_dir() {
                return input(format!(
                    "{} has no vae/ folder: the model cannot decode or encode images",
                    path.display()
                ));
            }
            Some(vae)
        } else if path.is_dir() {
            Some(path.to_path_buf())
        } else {
            None
        };
        match folder {
            Some(dir) => {
                let json_path = dir.join("config.json");
                if !json_path.exists() && config.is_none() {
                    return input(format!("{}: no config.json for the VAE", dir.display()));
                }
                let own = if json_path.exists() {
                    Some(read_json(&json_path)?)
                } else {
                    None
                };
                if let Some(j) = &own
                    && config.is_none()
                    && !is_vae_config(j)
                {
                    return input(format!(
                        "{}: not an AutoencoderKL (see _class_name); pass a pipeline folder, a VAE folder or a single file",
                        json_path.display()
                    ));
                }
                let json = config.or(own.as_ref()).expect("one is present");
                let weights = WeightSet::open(&folder_weights(&dir)?)?;
                let keys = VaeKeys::detect(&weights)?;
                let config = VaeConfig::from_json(json, DIFFUSERS_SCALE_SHIFT)?;
                Ok(VaeSource {
                    weights,
                    keys,
                    config,
                    path: dir,
                })
            }
            None => {
                let weights = WeightSet::open(&[path.to_path_buf()])?;
                let keys = VaeKeys::detect(&weights).map_err(|_| {
                    crate::error::Error::Input(format!(
                        "{} holds no VAE (no first_stage_model.* or ae.safetensors-style tensors)",
                        path.display()
                    ))
                })?;
                let (family, scale_shift) = if keys.prefix().is_empty() {
                    ("FLUX (unprefixed ae.safetensors keys)", FLUX_SCALE_SHIFT)
                } else {
                    ("SD3 (single-file checkpoint)", SD3_SCALE_SHIFT)
                };
                let config = match config {
                    Some(json) => VaeConfig::from_json(json, scale_shift)?,
                    None => VaeConfig::infer(&weights, &keys, scale_shift, family)?,
                };
                Ok(VaeSource {
                    weights,
                    keys,
                    config,
                    path: path.to_path_buf(),
                })
            }
        }
    }
}
