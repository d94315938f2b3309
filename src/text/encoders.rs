//! Running one text encoder over a batch of prompts: find its files, tokenize (warning about what
//! truncation drops), decide where its weights live, run it on the device and bring its outputs
//! back to the host, freeing its weights before the next model loads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use noiseshift_kernels::Gpu;
use noiseshift_kernels::ops::Act;
use serde_json::Value;

use crate::error::{Error, Result, input};
use crate::models::clip::{ClipConfig, ClipText};
use crate::models::stream::Offload;
use crate::models::t5::{T5Config, T5Encoder};
use crate::progress::Progress;
use crate::tensor_file::{self, HostTensor};
use crate::text::tokenize::PromptTokenizer;
use crate::weights::WeightSet;
use crate::weights::discover::{Layout, ModelPath, folder_weights, read_json};

/// Which encoder, for messages and single-file prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    ClipL,
    ClipG,
    T5,
}

impl EncoderKind {
    pub fn label(self) -> &'static str {
        match self {
            EncoderKind::ClipL => "CLIP-L",
            EncoderKind::ClipG => "CLIP-G",
            EncoderKind::T5 => "T5",
        }
    }

    /// Folder names in a diffusers SD3 pipeline, or (`flux`) a FluxPipeline, whose T5 is the
    /// second encoder.
    fn folders(self, flux: bool) -> (&'static str, &'static str) {
        match self {
            EncoderKind::ClipL => ("text_encoder", "tokenizer"),
            EncoderKind::T5 if flux => ("text_encoder_2", "tokenizer_2"),
            EncoderKind::ClipG => ("text_encoder_2", "tokenizer_2"),
            EncoderKind::T5 => ("text_encoder_3", "tokenizer_3"),
        }
    }

    /// Tensor-name prefix in an original single-file checkpoint.
    fn single_file_prefix(self) -> &'static str {
        match self {
            EncoderKind::ClipL => "text_encoders.clip_l.transformer.",
            EncoderKind::ClipG => "text_encoders.clip_g.transformer.",
            EncoderKind::T5 => "text_encoders.t5xxl.transformer.",
        }
    }
}

/// One encoder's files.
pub struct EncoderFiles {
    pub kind: EncoderKind,
    pub weights: Vec<PathBuf>,
    /// Tensor-name prefix ("" in a folder).
    pub prefix: String,
    pub config: Option<Value>,
    pub tokenizer: PathBuf,
}

impl EncoderFiles {
    /// The encoder of `kind` in a model (`flux`: a FLUX pipeline's layout), or None when the
    /// model has none. Single files carry no
    /// tokenizers: they come from `config_root`, a diffusers pipeline folder (`--config`), as
    /// do the encoder configs where it has them.
    pub fn locate(
        kind: EncoderKind,
        flux: bool,
        model: &ModelPath,
        single: Option<&WeightSet>,
        config_root: Option<&Path>,
    ) -> Result<Option<EncoderFiles>> {
        let (enc, tok) = kind.folders(flux);
        match model.layout {
            Layout::Pipeline => {
                let dir = model.path.join(enc);
                if !dir.is_dir() {
                    return Ok(None);
                }
                let config = dir.join("config.json");
                Ok(Some(EncoderFiles {
                    kind,
                    weights: folder_weights(&dir)?,
                    prefix: String::new(),
                    config: if config.exists() {
                        Some(read_json(&config)?)
                    } else {
                        None
                    },
                    tokenizer: model.path.join(tok),
                }))
            }
            Layout::SingleFile => {
                let prefix = kind.single_file_prefix();
                if !single.is_some_and(|w| w.names().any(|n| n.starts_with(prefix))) {
                    return Ok(None);
                }
                let Some(root) = config_root else {
                    return input(format!(
                        "{} carries the {} encoder but no tokenizer: pass --config PIPELINE_DIR, a diffusers \
                         pipeline folder whose {tok}/ is used",
                        model.path.display(),
                        kind.label()
                    ));
                };
                // diffusers' from_single_file(config=...): hyper-parameters that shapes cannot
                // tell (the head count) come from the folder's config.json when it has one.
                let config = root.join(enc).join("config.json");
                Ok(Some(EncoderFiles {
                    kind,
                    weights: vec![model.path.clone()],
                    prefix: prefix.to_string(),
                    config: if config.exists() {
                        Some(read_json(&config)?)
                    } else {
                        None
                    },
                    tokenizer: root.join(tok),
                }))
            }
            Layout::TransformerFolder => Ok(None),
        }
    }

    fn tokenizer(&self, t5_length: usize) -> Result<PromptTokenizer> {
        match self.kind {
            EncoderKind::T5 => PromptTokenizer::t5(&self.tokenizer, t5_length),
            _ => PromptTokenizer::clip(&self.tokenizer),
        }
    }
}

/// What an encoder run returns: the sequence [B, L, D] and, for CLIP, pooled [B, P].
pub struct Encoded {
    pub sequence: HostTensor,
    pub pooled: Option<HostTensor>,
}

/// How to run the encoders.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// T5 tokens.
    pub t5_length: usize,
    pub offload: Offload,
    /// Device memory for `--offload auto` (None: unknown).
    pub device_memory: Option<u64>,
}

/// Progress that appears only once a run has taken more than a second.
struct LateProgress {
    label: String,
    total: u64,
    start: Instant,
    bar: Option<Progress>,
}

impl LateProgress {
    fn new(label: String, total: usize) -> Self {
        LateProgress {
            label,
            total: total as u64,
            start: Instant::now(),
            bar: None,
        }
    }

    fn layer(&mut self, i: usize) {
        if self.bar.is_none() && self.start.elapsed().as_secs_f64() > 1.0 {
            let mut bar = Progress::new(&self.label, self.total);
            bar.skip_to(i as u64);
            self.bar = Some(bar);
        }
        if let Some(bar) = &mut self.bar {
            bar.advance(1, &format!("layer {}/{}", i + 1, self.total));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Tokenize `prompts`, warning (naming the prompt) about tokens truncation drops.
fn tokenize(kind: EncoderKind, tok: &PromptTokenizer, prompts: &[&str]) -> Result<Vec<Vec<u32>>> {
    prompts
        .iter()
        .map(|p| {
            let t = tok.encode(p)?;
            if t.dropped > 0 {
                eprintln!(
                    "warning: {} reads {} tokens; the prompt \"{}\" was truncated, {} tokens dropped",
                    kind.label(),
                    tok.length,
                    abbreviate(p),
                    t.dropped
                );
            }
            Ok(t.ids)
        })
        .collect()
}

fn abbreviate(p: &str) -> String {
    if p.chars().count() > 60 {
        format!("{}...", p.chars().take(57).collect::<String>())
    } else {
        p.to_string()
    }
}

/// Run one encoder over `prompts` (one batch) and free it.
pub fn encode(
    gpu: &Gpu,
    files: &EncoderFiles,
    prompts: &[&str],
    opts: RunOptions,
) -> Result<Encoded> {
    let tok = files.tokenizer(opts.t5_length)?;
    let ids = tokenize(files.kind, &tok, prompts)?;
    let w = WeightSet::open(&files.weights)?;
    let tokens = ids.len() * tok.length;
    let check_vocab = |table: usize| -> Result<()> {
        if tok.vocab_size > table {
            return input(format!(
                "{}: the tokenizer in {} has {} tokens but the encoder's embedding table has {table} rows",
                files.kind.label(),
                files.tokenizer.display(),
                tok.vocab_size
            ));
        }
        Ok(())
    };
    let (_, bytes) = w.totals(&files.prefix);
    let label = files.kind.label();
    let result = match files.kind {
        EncoderKind::T5 => {
            let c = T5Config::resolve(&w, &files.prefix, files.config.as_ref())?;
            check_vocab(c.vocab)?;
            let acts = (tokens * (4 * c.d_model + 3 * c.d_ff) * 4) as u64;
            let residency = opts.offload.decide(label, bytes, acts, opts.device_memory);
            eprintln!("{}", residency.reason);
            let layers = c.layers;
            let model = T5Encoder::load(gpu, &w, &files.prefix, c, residency.stream)?;
            let mut progress = LateProgress::new(format!("encoding {label}"), layers);
            let seq = model.forward(gpu, &ids, |i| {
                gpu.finish()?;
                progress.layer(i);
                Ok(())
            })?;
            progress.finish();
            Encoded {
                sequence: tensor_file::download(gpu, &seq)?,
                pooled: None,
            }
        }
        kind => {
            // The activation of an encoder inferred from a single file: by which it is.
            let act = if kind == EncoderKind::ClipL {
                Act::QuickGelu
            } else {
                Act::GeluErf
            };
            let c = ClipConfig::resolve(&w, &files.prefix, files.config.as_ref(), act, tok.eos_id)?;
            check_vocab(c.vocab)?;
            let acts = (tokens * (4 * c.hidden + c.intermediate) * 4) as u64;
            let residency = opts.offload.decide(label, bytes, acts, opts.device_memory);
            eprintln!("{}", residency.reason);
            let layers = c.layers;
            let model = ClipText::load(gpu, &w, &files.prefix, c, residency.stream)?;
            let mut progress = LateProgress::new(format!("encoding {label}"), layers);
            let out = model.forward(gpu, &ids, |i| {
                gpu.finish()?;
                progress.layer(i);
                Ok(())
            })?;
            progress.finish();
            Encoded {
                sequence: tensor_file::download(gpu, &out.sequence)?,
                pooled: Some(tensor_file::download(gpu, &out.pooled)?),
            }
        }
    };
    gpu.trim_memory();
    Ok(result)
}

impl Encoded {
    pub fn pooled(&self) -> Result<&HostTensor> {
        self.pooled
            .as_ref()
            .ok_or_else(|| Error::Failure("this encoder has no pooled output".into()))
    }
}
