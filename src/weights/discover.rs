//! What a MODEL path holds: a diffusers pipeline folder (model_index.json + transformer/, vae/,
//! text encoders, tokenizers, scheduler/), a bare transformer folder (config.json + one or
//! sharded safetensors), or an original single-file checkpoint.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result, input};
use crate::weights::file::WeightSet;

/// A part of a text-to-image pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Transformer,
    Vae,
    TextEncoder,
    TextEncoder2,
    TextEncoder3,
    Tokenizer,
    Tokenizer2,
    Tokenizer3,
    Scheduler,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Transformer => "transformer",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
            Component::TextEncoder3 => "text_encoder_3",
            Component::Tokenizer => "tokenizer",
            Component::Tokenizer2 => "tokenizer_2",
            Component::Tokenizer3 => "tokenizer_3",
            Component::Scheduler => "scheduler",
        }
    }

    const FOLDERS: [Component; 9] = [
        Component::Transformer,
        Component::Vae,
        Component::TextEncoder,
        Component::TextEncoder2,
        Component::TextEncoder3,
        Component::Tokenizer,
        Component::Tokenizer2,
        Component::Tokenizer3,
        Component::Scheduler,
    ];
}

/// How the files are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Pipeline,
    TransformerFolder,
    SingleFile,
}

/// A resolved MODEL argument.
pub struct ModelPath {
    pub path: PathBuf,
    pub layout: Layout,
    /// Safetensors files of the transformer (for a single file: that file).
    pub transformer_files: Vec<PathBuf>,
    /// The transformer's config.json, when there is one.
    pub config: Option<serde_json::Value>,
    /// `shift` from scheduler/scheduler_config.json, when there is one.
    pub scheduler_shift: Option<f64>,
    /// scheduler/scheduler_config.json itself (FLUX.1-dev's dynamic shift lives there).
    pub scheduler: Option<serde_json::Value>,
    /// Folder components present (single files report theirs from the keys, see `components`).
    folder_components: Vec<Component>,
    /// Sampling defaults a pipeline folder records in `noiseshift.json` (the built-in model's).
    pub defaults: ModelDefaults,
    /// The name tables and reports use: the folder or file name, or "builtin".
    pub name: String,
}

/// What a model's own `noiseshift.json` says to use when the command line does not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelDefaults {
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub max_sequence_length: Option<usize>,
}

impl ModelDefaults {
    fn read(dir: &Path) -> Result<ModelDefaults> {
        let path = dir.join("noiseshift.json");
        if !path.exists() {
            return Ok(ModelDefaults::default());
        }
        let json = read_json(&path)?;
        let count = |k: &str| -> Result<Option<usize>> {
            match json.get(k) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 1 => Ok(Some(n as usize)),
                    _ => input(format!(
                        "{}: {k} must be a positive integer, got {v}",
                        path.display()
                    )),
                },
            }
        };
        let guidance = match json.get("default_guidance") {
            None => None,
            Some(v) => match v.as_f64() {
                Some(g) if g.is_finite() && g >= 0.0 => Some(g),
                _ => {
                    return input(format!(
                        "{}: default_guidance must be a finite number >= 0, got {v}",
                        path.display()
                    ));
                }
            },
        };
        Ok(ModelDefaults {
            steps: count("default_steps")?,
            guidance,
            max_sequence_length: count("max_sequence_length")?,
        })
    }
}

pub(crate) use crate::files::read_json;

/// The safetensors files of a model folder: the shard index when present, else the single file
/// (`diffusion_pytorch_model.safetensors` in diffusers' folders, `model.safetensors` in
/// transformers' text encoders), else any one *.safetensors.
pub fn folder_weights(dir: &Path) -> Result<Vec<PathBuf>> {
    for stem in ["diffusion_pytorch_model", "model"] {
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        if index.exists() {
            return shard_files(dir, &index);
        }
        let single = dir.join(format!("{stem}.safetensors"));
        if single.exists() {
            return Ok(vec![single]);
        }
    }
    let mut any: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::read(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    any.sort();
    if any.is_empty() {
        return input(format!("{}: no .safetensors weights found", dir.display()));
    }
    Ok(any)
}

/// The shards a `*.safetensors.index.json` names, each checked to exist.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let json = read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Input(format!("{}: no weight_map object", index.display())))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for v in map.values() {
        let name = v
            .as_str()
            .ok_or_else(|| Error::Input(format!("{}: non-string shard name", index.display())))?;
        let p = dir.join(name);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    for f in &files {
        if !f.exists() {
            return input(format!(
                "shard {} listed in {} is missing",
                f.display(),
                index.display()
            ));
        }
    }
    files.sort();
    Ok(files)
}

/// The folder name, or a file's name without extension.
fn file_name(path: &Path, file: bool) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let stem = if file {
        path.file_stem()
    } else {
        path.file_name()
    };
    stem.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

impl ModelPath {
    pub fn resolve(path: &Path) -> Result<ModelPath> {
        if !path.exists() {
            return input(format!("model path {} does not exist", path.display()));
        }
        if path.is_file() {
            return Ok(ModelPath {
                path: path.to_path_buf(),
                layout: Layout::SingleFile,
                transformer_files: vec![path.to_path_buf()],
                config: None,
                scheduler_shift: None,
                scheduler: None,
                folder_components: Vec::new(),
                defaults: ModelDefaults::default(),
                name: file_name(path, true),
            });
        }
        if path.join("model_index.json").exists() {
            let tdir = path.join("transformer");
            if !tdir.is_dir() {
                return input(format!(
                    "{}: pipeline folder without a transformer/ folder",
                    path.display()
                ));
            }
            let config_path = tdir.join("config.json");
            let config = if config_path.exists() {
                Some(read_json(&config_path)?)
            } else {
                None
            };
            let sched = path.join("scheduler").join("scheduler_config.json");
            let scheduler = if sched.exists() {
                Some(read_json(&sched)?)
            } else {
                None
            };
            let scheduler_shift = scheduler
                .as_ref()
                .and_then(|j| j.get("shift"))
                .and_then(|v| v.as_f64());
            let folder_components = Component::FOLDERS
                .into_iter()
                .filter(|c| path.join(c.name()).is_dir())
                .collect();
            return Ok(ModelPath {
                path: path.to_path_buf(),
                layout: Layout::Pipeline,
                transformer_files: folder_weights(&tdir)?,
                config,
                scheduler_shift,
                scheduler,
                folder_components,
                defaults: ModelDefaults::read(path)?,
                name: file_name(path, false),
            });
        }
        if path.join("config.json").exists() {
            return Ok(ModelPath {
                path: path.to_path_buf(),
                layout: Layout::TransformerFolder,
                transformer_files: folder_weights(path)?,
                config: Some(read_json(&path.join("config.json"))?),
                scheduler_shift: None,
                scheduler: None,
                folder_components: vec![Component::Transformer],
                defaults: ModelDefaults::default(),
                name: file_name(path, false),
            });
        }
        input(format!(
            "{}: not a model (expected a diffusers pipeline folder with model_index.json, a transformer folder \
             with config.json, or a .safetensors checkpoint)",
            path.display()
        ))
    }

    /// The components this path holds; single files are judged by their key prefixes.
    pub fn components(&self, weights: &WeightSet) -> Vec<Component> {
        if self.layout != Layout::SingleFile {
            return self.folder_components.clone();
        }
        let has = |prefix: &str| weights.names().any(|n| n.starts_with(prefix));
        let mut out = vec![Component::Transformer];
        if has("first_stage_model.") {
            out.push(Component::Vae);
        }
        for (prefix, c) in [
            ("text_encoders.clip_l.", Component::TextEncoder),
            ("text_encoders.clip_g.", Component::TextEncoder2),
            ("text_encoders.t5xxl.", Component::TextEncoder3),
        ] {
            if has(prefix) {
                out.push(c);
            }
        }
        out
    }

    /// A short name for the model: the folder or file name without extension, or "builtin".
    pub fn name(&self) -> String {
        self.name.clone()
    }
}

/// `--config PATH`: a config.json (a transformer's, or a VAE's by its `_class_name`
/// AutoencoderKL), or a diffusers folder whose transformer/config.json and vae/config.json
/// are used, as diffusers' `from_single_file(config=...)` does.
#[derive(Default)]
pub struct ConfigOverride {
    pub transformer: Option<serde_json::Value>,
    pub vae: Option<serde_json::Value>,
}

impl ConfigOverride {
    pub fn read(path: Option<&Path>) -> Result<ConfigOverride> {
        let Some(path) = path else {
            return Ok(ConfigOverride::default());
        };
        if !path.exists() {
            return input(format!("--config {} does not exist", path.display()));
        }
        let is_vae = |j: &serde_json::Value| {
            j.get("_class_name").and_then(|v| v.as_str()) == Some("AutoencoderKL")
        };
        if path.is_file() {
            let json = read_json(path)?;
            return Ok(if is_vae(&json) {
                ConfigOverride {
                    transformer: None,
                    vae: Some(json),
                }
            } else {
                ConfigOverride {
                    transformer: Some(json),
                    vae: None,
                }
            });
        }
        let part = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = path.join(name).join("config.json");
            if p.exists() {
                read_json(&p).map(Some)
            } else {
                Ok(None)
            }
        };
        let out = ConfigOverride {
            transformer: part("transformer")?,
            vae: part("vae")?,
        };
        if out.transformer.is_none() && out.vae.is_none() {
            return input(format!(
                "--config {}: no transformer/config.json or vae/config.json inside",
                path.display()
            ));
        }
        Ok(out)
    }
}
