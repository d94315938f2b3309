//! Calibration data from a folder of images (the paper's setting): PNG and JPEG files in name
//! order, prepared as diffusers' VaeImageProcessor does (`images::load`), encoded by the
//! model's VAE (the latent distribution's mean, or a seeded sample) and scaled, with one
//! seeded noise per image. Unreadable, truncated and 16-bit files are skipped with a warning
//! naming each; fewer usable images than asked for is an error.
//!
//! Conditioning: captions (JSON lines `{"file", "caption"}` or `name<TAB>caption`), parsed and
//! checked here, go through the model's text encoders (the empty prompt for images without
//! one, and as the negative prompt with guidance); or an embeddings file gives it
//! (`prompt_embeds` / `pooled_prompt_embeds`, one shared row or one per image file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use noiseshift_kernels::Gpu;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result, input};
use crate::images::load::{prepare, read_rgb};
use crate::models::vae::Vae;
use crate::models::vae::tiling::{self, TilingMode};
use crate::noise::seeded_noise;
use crate::noiseshift::dataset::Dataset;
use crate::tensor_file::{self, HostTensor};
use crate::text::prompt::{PromptEmbeds, PromptEncoder};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The image files of `dir`, sorted by name.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| EXTENSIONS.contains(&x.to_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return input(format!("{}: no PNG or JPEG images", dir.display()));
    }
    Ok(files)
}

/// Captions by file name, from JSON lines `{"file": ..., "caption": ...}` or
/// `name<TAB>caption` lines; every name must be one of `files`.
pub fn read_captions(path: &Path, files: &[PathBuf]) -> Result<HashMap<String, String>> {
    let text = crate::files::read_text(path)?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{}:{}", path.display(), n + 1);
        let (name, caption) = if line.trim_start().starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::Input(format!("{at}: invalid JSON: {e}")))?;
            match (
                v.get("file").and_then(|f| f.as_str()),
                v.get("caption").and_then(|c| c.as_str()),
            ) {
                (Some(f), Some(c)) => (f.to_string(), c.to_string()),
                _ => {
                    return input(format!(
                        "{at}: needs string fields \"file\" and \"caption\""
                    ));
                }
            }
        } else {
            match line.split_once('\t') {
                Some((f, c)) => (f.to_string(), c.to_string()),
                None => {
                    return input(format!("{at}: neither a JSON object nor name<TAB>caption"));
                }
            }
        };
        if !files
            .iter()
            .any(|p| p.file_name().is_some_and(|f| f == name.as_str()))
        {
            return input(format!(
                "{at}: caption for '{name}', which is not an image of the folder"
            ));
        }
        out.insert(name, caption);
    }
    Ok(out)
}

/// Prompts per encoder run: bounds the activations (T5-XXL over 256 tokens is ~25 MB a prompt).
const PROMPTS_PER_RUN: usize = 16;

/// Embeddings [N, L, D] and pooled [N, P] for `captions` (the empty prompt where None), each
/// distinct caption encoded once.
pub(crate) fn encode_captions(
    encoder: &PromptEncoder<'_>,
    captions: &[Option<String>],
) -> Result<(HostTensor, HostTensor)> {
    let texts: Vec<&str> = captions
        .iter()
        .map(|c| c.as_deref().unwrap_or(""))
        .collect();
    let mut distinct: Vec<&str> = texts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let runs = distinct
        .chunks(PROMPTS_PER_RUN)
        .map(|chunk| encoder.encode(chunk))
        .collect::<Result<Vec<PromptEmbeds>>>()?;
    let embeds = HostTensor::concat(&runs.iter().map(|r| &r.embeds).collect::<Vec<_>>());
    let pooled = HostTensor::concat(&runs.iter().map(|r| &r.pooled).collect::<Vec<_>>());
    let index: Vec<usize> = texts
        .iter()
        .map(|t| distinct.binary_search(t).expect("every caption is listed"))
        .collect();
    Ok((embeds.gather(&index), pooled.gather(&index)))
}

/// What to build the data set from.
pub struct ImagesRequest<'a> {
    pub dir: &'a Path,
    pub captions: Option<&'a Path>,
    pub embeds: Option<&'a Path>,
    pub samples: Option<usize>,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub sample_latents: bool,
    pub tiling: TilingMode,
    /// The text encoders, for captions when there is no embeddings file.
    pub encoder: Option<&'a PromptEncoder<'a>>,
    /// Also encode the empty prompt as the negative (guidance during calibration).
    pub negative: bool,
}

/// Rows of an embeddings tensor for the kept images: row 0 when shared, else by file index.
fn pick(
    t: &HostTensor,
    kept: &[usize],
    files: usize,
    name: &str,
    path: &Path,
) -> Result<HostTensor> {
    match t.shape.first() {
        Some(1) => Ok(t.clone()),
        Some(&n) if n == files => Ok(t.gather(kept)),
        _ => input(format!(
            "{}: {name} {:?} needs 1 row or one per image file ({files})",
            path.display(),
            t.shape
        )),
    }
}

/// The calibration data of an images folder, encoded by `vae`.
pub fn dataset(gpu: &Gpu, vae: &Vae, req: &ImagesRequest<'_>) -> Result<Dataset> {
    let files = list(req.dir)?;
    let captions = match req.captions {
        Some(p) => Some(read_captions(p, &files)?),
        None => None,
    };
    let want = req.samples.unwrap_or(files.len().min(200));
    if want == 0 {
        return input("--samples must be at least 1");
    }
    let f = vae.config.factor();
    if !req.width.is_multiple_of(f) || !req.height.is_multiple_of(f) {
        return input(format!(
            "{}x{} is not a multiple of the VAE's {f}",
            req.width, req.height
        ));
    }
    let mut kept = Vec::new();
    let mut pixels = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if kept.len() == want {
            break;
        }
        match read_rgb(file) {
            Ok(rgb) => {
                let p = prepare(&rgb, req.width, req.height);
                if p.upscaled {
                    eprintln!(
                        "warning: {} ({}x{}) is smaller than {}x{}: upscaled",
                        file.display(),
                        rgb.width(),
                        rgb.height(),
                        req.width,
                        req.height
                    );
                }
                pixels.extend(p.pixels);
                kept.push(i);
            }
            Err(e) => eprintln!("warning: skipping {e}"),
        }
    }
    if kept.len() < want {
        return input(format!(
            "{}: {} usable images, fewer than the {want} asked for (--samples)",
            req.dir.display(),
            kept.len()
        ));
    }
    let n = kept.len();
    let images = HostTensor::new(vec![n, 3, req.height, req.width], pixels);
    // Conditioning before the (costly) encoding, so that a refusal comes first.
    let (embeds, pooled, negative, text) = match req.embeds {
        Some(path) => {
            let mut t = tensor_file::read(path)?;
            let mut get = |name: &str| -> Result<HostTensor> {
                let e = tensor_file::take(&mut t, name, path)?;
                pick(&e, &kept, files.len(), name, path)
            };
            let embeds = get("prompt_embeds")?;
            let pooled = get("pooled_prompt_embeds")?;
            let negative = match (
                get("negative_prompt_embeds"),
                get("negative_pooled_prompt_embeds"),
            ) {
                (Ok(e), Ok(p)) => Some((e, p)),
                _ => None,
            };
            (
                embeds,
                pooled,
                negative,
                format!("embeddings {}", path.display()),
            )
        }
        None => {
            let per_image: Vec<Option<String>> = kept
                .iter()
                .map(|&i| {
                    let name = files[i].file_name()?.to_string_lossy().into_owned();
                    captions.as_ref()?.get(&name).cloned()
                })
                .collect();
            let Some(encoder) = req.encoder else {
                return input(
                    "--images needs conditioning: the model's text encoders for the captions (or the empty \
                     prompt), or --embeds FILE",
                );
            };
            let (embeds, pooled) = encode_captions(encoder, &per_image)?;
            let negative = match req.negative {
                true => encode_captions(encoder, &[None]).map(Some)?,
                false => None,
            };
            let what = if captions.is_some() {
                "captions through the text encoders"
            } else {
                "the empty prompt through the text encoders"
            };
            (embeds, pooled, negative, what.to_string())
        }
    };
    let x0 = latents(gpu, vae, &images, req.seed, req.sample_latents, req.tiling)?;
    Ok(Dataset {
        noise: seeded_noise(req.seed, &x0.shape),
        x0,
        embeds,
        pooled,
        negative,
        description: format!(
            "images {} ({n} of {} files, {}), {text}",
            req.dir.display(),
            files.len(),
            if req.sample_latents {
                "sampled latents"
            } else {
                "latent means"
            },
        ),
    })
}

/// Images [N, 3, H, W] in [-1, 1] to scaled latents x0: the VAE's mean, or with `sample` a
/// seeded draw from its distribution (logvar clamped as diffusers does).
pub(crate) fn latents(
    gpu: &Gpu,
    vae: &Vae,
    images: &HostTensor,
    seed: u64,
    sample: bool,
    tiling: TilingMode,
) -> Result<HostTensor> {
    let (mean, logvar) = tiling::encode_planned(gpu, vae, images, tiling)?;
    let z = if sample {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_1a7e);
        let data = mean
            .data
            .iter()
            .zip(&logvar.data)
            .map(|(m, v)| {
                let e: f32 = StandardNormal.sample(&mut rng);
                m + (0.5 * v.clamp(-30.0, 20.0)).exp() * e
            })
            .collect();
        HostTensor::new(mean.shape.clone(), data)
    } else {
        mean
    };
    let c = &vae.config;
    let (scale, shift) = (c.scaling_factor as f32, c.shift_factor as f32);
    Ok(HostTensor::new(
        z.shape.clone(),
        z.data.iter().map(|v| (v - shift) * scale).collect(),
    ))
}
