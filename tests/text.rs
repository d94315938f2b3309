//! Tokenizers and text encoders against transformers (ids recorded by make_text_fixtures.py,
//! float64 encoder outputs from the stored weights), on every adapter; streaming against
//! resident weights; bad tokenizer and encoder folders.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use noiseshift::models::clip::{ClipConfig, ClipText};
use noiseshift::models::stream::Offload;
use noiseshift::models::t5::{T5Config, T5Encoder, bucket};
use noiseshift::text::encoders::{EncoderFiles, EncoderKind, RunOptions, encode};
use noiseshift::text::tokenize::PromptTokenizer;
use noiseshift::weights::WeightSet;
use noiseshift_kernels::ops::Act;

fn text() -> PathBuf {
    fixtures().join("text")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every recorded prompt: ids equal to transformers', and the dropped count its untruncated
/// length implies.
fn check_ids(tok: &PromptTokenizer, cases: &Path) {
    let spec = json(cases);
    let max = spec["max_length"].as_u64().unwrap() as usize;
    let cases = spec["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut truncated = 0;
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(prompt).unwrap();
        assert_eq!(got.ids, want, "{}: {prompt:?}", cases_name(tok));
        let untruncated = case["untruncated"].as_u64().unwrap() as usize;
        assert_eq!(got.dropped, untruncated.saturating_sub(max), "{prompt:?}");
        truncated += usize::from(got.dropped > 0);
    }
    assert!(truncated > 0, "some prompt must exceed the length");
}

fn cases_name(tok: &PromptTokenizer) -> String {
    format!("length {} pad {}", tok.length, tok.pad_id)
}

#[test]
fn clip_tokenizer_from_vocab_and_merges() {
    let tok = PromptTokenizer::clip(&text().join("clip-l-tokenizer")).unwrap();
    assert!(!text().join("clip-l-tokenizer/tokenizer.json").exists());
    assert_eq!(tok.pad_id, tok.eos_id, "CLIP-L pads with its end token");
    check_ids(&tok, &text().join("clip-l-ids.json"));
}

#[test]
fn clip_tokenizer_from_tokenizer_json_pads_with_bang() {
    let tok = PromptTokenizer::clip(&text().join("clip-g-tokenizer")).unwrap();
    assert_eq!(tok.pad_id, 0, "OpenCLIP-G pads with '!' = id 0");
    check_ids(&tok, &text().join("clip-g-ids.json"));
}

#[test]
fn t5_tokenizer() {
    let tok = PromptTokenizer::t5(&text().join("t5-tokenizer"), 24).unwrap();
    check_ids(&tok, &text().join("t5-ids.json"));
}

#[test]
fn t5_buckets_match_transformers_table() {
    // transformers' T5Attention._relative_position_bucket(bidirectional, 32 buckets, max
    // distance 128) at these offsets (key - query), printed by transformers 5.24.
    let want = [
        (-200, 15),
        (-128, 15),
        (-100, 15),
        (-20, 10),
        (-9, 8),
        (-8, 8),
        (-7, 7),
        (-1, 1),
        (0, 0),
        (1, 17),
        (7, 23),
        (8, 24),
        (12, 25),
        (33, 28),
        (64, 30),
        (127, 31),
        (500, 31),
    ];
    for (rel, b) in want {
        assert_eq!(bucket(rel, 32, 128), b, "offset {rel}");
    }
    // Over every offset -600..=600: the sum of the buckets and of bucket x (offset + 600), as
    // transformers gives them.
    let buckets: Vec<usize> = (-600..=600).map(|r| bucket(r, 32, 128)).collect();
    assert_eq!(buckets.iter().sum::<usize>(), 26990);
    let weighted: usize = buckets.iter().enumerate().map(|(i, b)| i * b).sum();
    assert_eq!(weighted, 19078800);
}

struct Expected {
    ids: Vec<Vec<u32>>,
    tensors: std::collections::HashMap<String, noiseshift::tensor_file::HostTensor>,
}

fn expected(name: &str) -> Expected {
    let mut tensors = read(&text().join(format!("{name}-expected.safetensors")));
    let ids = tensors.remove("input_ids").unwrap();
    let len = ids.shape[1];
    Expected {
        ids: ids
            .data
            .chunks(len)
            .map(|r| r.iter().map(|&v| v as u32).collect())
            .collect(),
        tensors,
    }
}

fn clip_case(name: &str, act: Act) {
    let w = WeightSet::open(&[text().join(name).join("model.safetensors")]).unwrap();
    let config_json = json(&text().join(name).join("config.json"));
    let e = expected(name);
    for gpu in all_gpus() {
        let mut outs = Vec::new();
        for stream in [false, true] {
            let c = ClipConfig::resolve(&w, "", Some(&config_json), act, 0).unwrap();
            let model = ClipText::load(&gpu, &w, "", c, stream).unwrap();
            let out = model.forward(&gpu, &e.ids, |_| Ok(())).unwrap();
            let seq = out.sequence.to_vec(&gpu).unwrap();
            let pooled = out.pooled.to_vec(&gpu).unwrap();
            let what = format!("{name} on {} (stream {stream})", gpu.adapter.label());
            assert_max_rel(
                &format!("{what} sequence"),
                &seq,
                &e.tensors["sequence"].data,
                1e-3,
            );
            assert_max_rel(
                &format!("{what} pooled"),
                &pooled,
                &e.tensors["pooled"].data,
                1e-3,
            );
            outs.push((seq, pooled));
        }
        assert_eq!(
            outs[0], outs[1],
            "streamed weights give the resident result bit for bit"
        );
    }
}

#[test]
fn clip_l_f16_quick_gelu_argmax_pooling() {
    clip_case("clip-l", Act::QuickGelu);
}

#[test]
fn clip_g_f32_gelu_eos_pooling() {
    clip_case("clip-g", Act::GeluErf);
}

fn t5_case(name: &str) {
    let w = WeightSet::open(&[text().join(name).join("model.safetensors")]).unwrap();
    let config_json = json(&text().join(name).join("config.json"));
    let e = expected(name);
    for gpu in all_gpus() {
        let mut outs = Vec::new();
        for stream in [false, true] {
            let c = T5Config::resolve(&w, "", Some(&config_json)).unwrap();
            let model = T5Encoder::load(&gpu, &w, "", c, stream).unwrap();
            let seq = model
                .forward(&gpu, &e.ids, |_| Ok(()))
                .unwrap()
                .to_vec(&gpu)
                .unwrap();
            let what = format!("{name} on {} (stream {stream})", gpu.adapter.label());
            assert_max_rel(&what, &seq, &e.tensors["sequence"].data, 1e-3);
            outs.push(seq);
        }
        assert_eq!(
            outs[0], outs[1],
            "streamed weights give the resident result bit for bit"
        );
    }
}

#[test]
fn t5_bf16() {
    t5_case("t5");
}

#[test]
fn t5_residual_stream_beyond_f16_range() {
    // The fixture's feed-forward weights drive the residual stream past f16's 65504 (recorded
    // from the float64 reference); our f32 activations still match.
    let header = std::fs::read(text().join("t5-overflow-expected.safetensors")).unwrap();
    let n = u64::from_le_bytes(header[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&header[8..8 + n]).unwrap();
    let peak: f64 = meta["__metadata__"]["peak_hidden"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(peak > 65504.0, "fixture peak {peak}");
    t5_case("t5-overflow");
}

fn files(kind: EncoderKind, encoder: &str, tokenizer: &str) -> EncoderFiles {
    EncoderFiles {
        kind,
        weights: vec![text().join(encoder).join("model.safetensors")],
        prefix: String::new(),
        config: Some(json(&text().join(encoder).join("config.json"))),
        tokenizer: text().join(tokenizer),
    }
}

fn options() -> RunOptions {
    RunOptions {
        t5_length: 24,
        offload: Offload::Auto,
        device_memory: None,
    }
}

#[test]
fn bad_tokenizer_and_encoder_folders() {
    let gpu = gpu();
    let prompts = ["a photo of a cat"];
    let err = |f: &EncoderFiles| {
        encode(&gpu, f, &prompts, options())
            .err()
            .unwrap()
            .to_string()
    };

    // Missing tokenizer files.
    let empty = tempfile::tempdir().unwrap();
    let mut f = files(EncoderKind::ClipL, "clip-l", "clip-l-tokenizer");
    f.tokenizer = empty.path().to_path_buf();
    let e = err(&f);
    assert!(
        e.contains("vocab.json") && e.contains("tokenizer.json"),
        "{e}"
    );
    f.tokenizer = empty.path().join("absent");
    assert!(err(&f).contains("is missing"));

    // A T5 folder with only spiece.model says how to make tokenizer.json.
    let spm = tempfile::tempdir().unwrap();
    std::fs::copy(
        text().join("t5-tokenizer/spiece.model"),
        spm.path().join("spiece.model"),
    )
    .unwrap();
    let mut f = files(EncoderKind::T5, "t5", "t5-tokenizer");
    f.tokenizer = spm.path().to_path_buf();
    let e = err(&f);
    assert!(
        e.contains("tokenizer.json") && e.contains("save_pretrained"),
        "{e}"
    );

    // A vocabulary larger than the encoder's token table.
    let f = files(EncoderKind::ClipL, "clip-l-small-table", "clip-l-tokenizer");
    let e = err(&f);
    assert!(e.contains("embedding table has 100 rows"), "{e}");

    // An encoder file with a tensor missing.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(text().join("clip-g/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "text_model.encoder.layers.1.mlp.fc2.weight")
        .collect();
    let out = dir.path().join("model.safetensors");
    std::fs::write(&out, safetensors::serialize(kept, None).unwrap()).unwrap();
    let mut f = files(EncoderKind::ClipG, "clip-g", "clip-g-tokenizer");
    f.weights = vec![out];
    let e = err(&f);
    assert!(
        e.contains("missing tensor 'text_model.encoder.layers.1.mlp.fc2.weight'"),
        "{e}"
    );

    // A sequence length of 0.
    assert!(
        PromptTokenizer::t5(&text().join("t5-tokenizer"), 0)
            .err()
            .unwrap()
            .to_string()
            .contains("at least 1")
    );
}
