//! The prompt tokenizers, on the `tokenizers` crate, built exactly as transformers builds them
//! (so the ids are the ones diffusers feeds its encoders):
//! - CLIP: `tokenizer.json` when the folder has one; else, from `vocab.json` + `merges.txt`,
//!   the pipeline of transformers' CLIPTokenizer (NFC, whitespace runs to one space, lower case,
//!   CLIP's split pattern, byte-level BPE with `</w>` word ends, start and end tokens around the
//!   sequence), padded to 77 with the folder's own pad token (CLIP-L: the end token; OpenCLIP-G:
//!   "!", id 0), read from `tokenizer_config.json`.
//! - T5: `tokenizer.json` (SentencePiece unigram with `</s>` appended), padded with `<pad>`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Value, json};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result, input};
use crate::files::{read_json, read_text};

/// Token ids of one prompt, padded to the encoder's length, and how many were cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub dropped: usize,
}

pub struct PromptTokenizer {
    /// Without truncation (to count what is dropped) and with it.
    full: Tokenizer,
    truncating: Tokenizer,
    /// Padded length (77 for CLIP, `--max-sequence-length` for T5).
    pub length: usize,
    pub pad_id: u32,
    /// The end-of-text token's id (CLIP pools at its position).
    pub eos_id: u32,
    pub vocab_size: usize,
    folder: PathBuf,
}

/// CLIP's pre-tokenizer pattern, as transformers' CLIPTokenizer spells it.
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const CLIP_BOS: &str = "<|startoftext|>";
const CLIP_EOS: &str = "<|endoftext|>";

/// A special token from tokenizer_config.json / special_tokens_map.json: a string, or an
/// object with `content`.
fn special(folder: &Path, key: &str) -> Result<Option<String>> {
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = folder.join(file);
        if !path.exists() {
            continue;
        }
        let v = read_json(&path)?;
        match v.get(key) {
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(Value::Object(o)) => {
                if let Some(Value::String(s)) = o.get("content") {
                    return Ok(Some(s.clone()));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

fn load_json_tokenizer(path: &Path) -> Result<Tokenizer> {
    let text = read_text(path)?;
    Tokenizer::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: not a tokenizer.json: {e}", path.display())))
}

fn added(id: u32, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": false, "special": true})
}

/// transformers' CLIPTokenizer pipeline around the folder's vocab.json and merges.txt.
fn clip_from_files(folder: &Path, pad: &str) -> Result<Tokenizer> {
    let vocab_path = folder.join("vocab.json");
    let merges_path = folder.join("merges.txt");
    for p in [&vocab_path, &merges_path] {
        if !p.exists() {
            return input(format!(
                "{}: a CLIP tokenizer needs tokenizer.json or vocab.json + merges.txt; {} is missing",
                folder.display(),
                p.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    let vocab = read_json(&vocab_path)?;
    let Some(map) = vocab.as_object() else {
        return input(format!(
            "{}: expected a token -> id object",
            vocab_path.display()
        ));
    };
    let id_of = |token: &str| -> Result<u32> {
        map.get(token)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                Error::Input(format!(
                    "{}: the vocabulary lacks '{token}'",
                    vocab_path.display()
                ))
            })
    };
    let text = read_text(&merges_path)?;
    let merges = text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok(json!([a, b])),
                _ => input(format!(
                    "{}: merge line '{l}' is not two tokens",
                    merges_path.display()
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let (bos, eos) = (id_of(CLIP_BOS)?, id_of(CLIP_EOS)?);
    let mut specials = vec![added(bos, CLIP_BOS), added(eos, CLIP_EOS)];
    if pad != CLIP_EOS {
        specials.push(added(id_of(pad)?, pad));
    }
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": specials,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [CLIP_EOS, eos], "cls": [CLIP_BOS, bos],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": CLIP_EOS, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    Tokenizer::from_str(&spec.to_string()).map_err(|e| {
        Error::Input(format!(
            "{}: cannot build the CLIP tokenizer: {e}",
            folder.display()
        ))
    })
}

impl PromptTokenizer {
    /// A CLIP tokenizer folder (77 tokens).
    pub fn clip(folder: &Path) -> Result<PromptTokenizer> {
        check_folder(folder)?;
        let pad = special(folder, "pad_token")?.unwrap_or_else(|| CLIP_EOS.to_string());
        let json = folder.join("tokenizer.json");
        let tokenizer = if json.exists() {
            load_json_tokenizer(&json)?
        } else {
            clip_from_files(folder, &pad)?
        };
        let eos = special(folder, "eos_token")?.unwrap_or_else(|| CLIP_EOS.to_string());
        PromptTokenizer::new(tokenizer, folder, 77, &pad, &eos)
    }

    /// A T5 tokenizer folder, padded to `length` tokens.
    pub fn t5(folder: &Path, length: usize) -> Result<PromptTokenizer> {
        check_folder(folder)?;
        let json = folder.join("tokenizer.json");
        if !json.exists() {
            let hint = if folder.join("spiece.model").exists() {
                " (it has only spiece.model: convert it once with Python, e.g. \
                 `transformers.T5TokenizerFast.from_pretrained(DIR).save_pretrained(DIR)`)"
            } else {
                ""
            };
            return input(format!(
                "{}: the T5 tokenizer needs tokenizer.json{hint}",
                folder.display()
            ));
        }
        let tokenizer = load_json_tokenizer(&json)?;
        let pad = special(folder, "pad_token")?.unwrap_or_else(|| "<pad>".to_string());
        let eos = special(folder, "eos_token")?.unwrap_or_else(|| "</s>".to_string());
        PromptTokenizer::new(tokenizer, folder, length, &pad, &eos)
    }

    fn new(
        mut tokenizer: Tokenizer,
        folder: &Path,
        length: usize,
        pad: &str,
        eos: &str,
    ) -> Result<PromptTokenizer> {
        if length == 0 {
            return input("the token sequence length must be at least 1");
        }
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                Error::Input(format!(
                    "{}: the tokenizer has no token '{token}'",
                    folder.display()
                ))
            })
        };
        let (pad_id, eos_id) = (id(pad)?, id(eos)?);
        let truncate = |t: &mut Tokenizer, params| {
            t.with_truncation(params)
                .map(|_| ())
                .map_err(|e| Error::Failure(format!("{}: {e}", folder.display())))
        };
        truncate(&mut tokenizer, None)?;
        tokenizer.with_padding(None);
        let mut truncating = tokenizer.clone();
        truncate(
            &mut truncating,
            Some(TruncationParams {
                max_length: length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }),
        )?;
        Ok(PromptTokenizer {
            vocab_size: tokenizer.get_vocab_size(true),
            full: tokenizer,
            truncating,
            length,
            pad_id,
            eos_id,
            folder: folder.to_path_buf(),
        })
    }

    /// The ids of `text` with the start/end tokens, truncated to `length` (the end token kept)
    /// and padded with the pad token.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let fail = |e: tokenizers::Error| {
            Error::Failure(format!("tokenizing with {}: {e}", self.folder.display()))
        };
        let full = self.full.encode(text, true).map_err(fail)?.len();
        let mut ids = self
            .truncating
            .encode(text, true)
            .map_err(fail)?
            .get_ids()
            .to_vec();
        let dropped = full.saturating_sub(ids.len());
        ids.resize(self.length, self.pad_id);
        Ok(Tokens { ids, dropped })
    }
}

fn check_folder(folder: &Path) -> Result<()> {
    if !folder.is_dir() {
        return input(format!("tokenizer folder {} is missing", folder.display()));
    }
    Ok(())
}
