//! The built-in model: a small text-to-image model with the real SD3 architecture and diffusers
//! layout (src/builtin/model/, trained by src/builtin/train/), embedded in the binary with its
//! calibration tables so that the first command makes an image on any machine. The loaders read
//! files, so on first use the embedded folder is written once into the user's cache
//! (atomically: a temporary folder, then a rename) and used from there.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result, input};
use crate::weights::ModelPath;

/// The name a MODEL argument uses for the built-in model, and its name in tables and reports.
pub const NAME: &str = "builtin";

/// Captions of the training grammar (src/builtin/train/data.py), the built-in model's prompts
/// for `calibrate --self` when no --prompts is given: every shape and colour, sizes, positions,
/// relations and backgrounds.
pub const PROMPTS: &[&str] = &[
    "a red circle",
    "a blue square",
    "a green triangle on a white background",
    "a small yellow star on the left",
    "a large purple ring on a black background",
    "an orange cross at the top on a blue background",
    "a white circle on a grey gradient background",
    "a black square on the right on a yellow background",
    "a large blue triangle at the bottom",
    "a small green star on a red background",
    "a yellow ring in the centre on a grey background",
    "a purple cross on a white background",
    "a red square above a blue circle",
    "a small white star left of a large green ring on a black background",
    "an orange triangle below a purple square",
    "a green circle right of a yellow cross on a grey background",
    "a large black ring on a white gradient background",
    "a small orange circle on the right",
    "a blue star on an orange background",
    "a large red cross in the centre on a green background",
];

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/builtin/model/", $path)) as &[u8])),*]
    };
}

/// Every file of the pipeline folder, by its path inside it.
pub const FILES: &[(&str, &[u8])] = embed!(
    "model_index.json",
    "noiseshift.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/special_tokens_map.json",
    "tokenizer_2/tokenizer.json",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/vocab.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
);

macro_rules! tables {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/calibrations/builtin/", $file)))),*]
    };
}

/// The calibration tables shipped for it (calibrations/builtin/), found by `--calibration auto`
/// in the written folder's calibrations/.
pub const TABLES: &[(&str, &str)] = tables!("64x64-20steps.json", "96x96-20steps.json");

/// A short hash of everything embedded: the cache folder's name, so a new build never reads an
/// older build's files.
fn version() -> String {
    let mut h = Sha256::new();
    for (name, bytes) in FILES {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    for (name, text) in TABLES {
        h.update(name.as_bytes());
        h.update(text.as_bytes());
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the cache lives: NOISESHIFT_CACHE, else $XDG_CACHE_HOME/noiseshift, else
/// ~/.cache/noiseshift, else the system's temporary folder.
fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("NOISESHIFT_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("noiseshift");
    }
    if let Some(home) = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")) {
        return PathBuf::from(home).join(".cache").join("noiseshift");
    }
    std::env::temp_dir().join("noiseshift")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |e| Error::Write {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, bytes).map_err(fail)
}

/// Write the pipeline folder (and, with `tables`, calibrations/ inside it) into `dir`, which
/// must not exist yet.
fn write_folder(dir: &Path, tables: bool) -> Result<()> {
    for (name, bytes) in FILES {
        write_file(&dir.join(name), bytes)?;
    }
    if tables {
        for (name, text) in TABLES {
            write_file(&dir.join("calibrations").join(name), text.as_bytes())?;
        }
    }
    Ok(())
}

/// The built-in model's folder in the cache, written there on first use.
pub fn folder() -> Result<PathBuf> {
    let root = cache_root();
    let dir = root.join(format!("builtin-{}", version()));
    if dir.join("model_index.json").exists() {
        return Ok(dir);
    }
    let tmp = root.join(format!(".builtin-{}.tmp{}", version(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = write_folder(&tmp, true).and_then(|_| {
        std::fs::rename(&tmp, &dir).or_else(|e| {
            // Another process may have written it first.
            if dir.join("model_index.json").exists() {
                Ok(())
            } else {
                Err(Error::Write {
                    path: dir.clone(),
                    source: e,
                })
            }
        })
    });
    let _ = std::fs::remove_dir_all(&tmp);
    written?;
    eprintln!("the built-in model was written to {} (once)", dir.display());
    Ok(dir)
}

/// `noiseshift export-builtin DIR`: the pipeline folder, for diffusers' from_pretrained, with
/// the shipped tables in its calibrations/ (where `--calibration auto` looks).
pub fn export(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| Error::read(dir, e))?
            .next()
            .is_none();
        if !dir.is_dir() || !empty {
            return input(format!(
                "{} exists and is not an empty folder; export-builtin writes a new one",
                dir.display()
            ));
        }
    }
    let tmp = dir.with_file_name(format!(
        ".{}.tmp{}",
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into()),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = write_folder(&tmp, true).and_then(|_| {
        let _ = std::fs::remove_dir(dir);
        std::fs::rename(&tmp, dir).map_err(|e| Error::Write {
            path: dir.to_path_buf(),
            source: e,
        })
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// Whether a MODEL argument names the built-in model (absent, or "builtin").
fn is_builtin(model: Option<&Path>) -> bool {
    model.is_none_or(|p| p == Path::new(NAME))
}

/// A MODEL argument as a path: the built-in model's folder when it names that.
pub fn path(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) if !is_builtin(model) => Ok(p.to_path_buf()),
        _ => folder(),
    }
}

/// A MODEL argument resolved: a path, or the built-in model when absent or "builtin".
pub fn resolve(model: Option<&Path>) -> Result<ModelPath> {
    let mut path = ModelPath::resolve(&self::path(model)?)?;
    if is_builtin(model) {
        path.name = NAME.to_string();
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                listed(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_of_the_model_and_calibrations_folders_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (dir, names) in [
            (
                "src/builtin/model",
                FILES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ),
            (
                "calibrations/builtin",
                TABLES.iter().map(|(n, _)| *n).collect(),
            ),
        ] {
            let base = root.join(dir);
            let mut on_disk = Vec::new();
            if base.exists() {
                listed(&base, &base, &mut on_disk);
            }
            on_disk.sort();
            let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            names.sort();
            assert_eq!(on_disk, names, "{dir}");
        }
    }
}
