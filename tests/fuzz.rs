//! Hostile input, as property tests (issue 21): start from the valid fixtures, mutate bytes,
//! header fields, shapes, dtypes, config values and tokenizer files, run the real loaders
//! in-process, and require no panic, an input error (exit code 2) where the input is refused,
//! and no single allocation anywhere near the size of a lying header (a counting global
//! allocator records the largest request). NOISESHIFT_FUZZ_CASES sets the cases per property
//! (default 1000: 7000 cases in a few seconds; a long run: NOISESHIFT_FUZZ_CASES=100000).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fixtures;
use noiseshift::error::Error;
use noiseshift::models::mmdit::MmditConfig;
use noiseshift::tensor_file;
use noiseshift::text::tokenize::PromptTokenizer;
use noiseshift::weights::WeightSet;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// The system allocator, remembering the largest single request.
struct Recording;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Recording = Recording;

/// No fixture here is over a few MB: an allocation past this came from an unchecked number.
const ALLOCATION_CAP: usize = 64 << 20;

fn runner() -> TestRunner {
    let cases = std::env::var("NOISESHIFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// A refused input must be the input kind, and its message must name something.
fn refused_cleanly(e: &Error) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(e.exit_code(), 2, "{}", e);
    prop_assert!(!e.to_string().is_empty());
    Ok(())
}

fn check_allocations() -> std::result::Result<(), TestCaseError> {
    let largest = LARGEST.swap(0, Ordering::Relaxed);
    prop_assert!(
        largest <= ALLOCATION_CAP,
        "an allocation of {largest} bytes"
    );
    Ok(())
}

fn transformer() -> PathBuf {
    fixtures().join("sd3-tiny/transformer/diffusion_pytorch_model.safetensors")
}

/// Load `file` as a transformer and resolve its configuration (with `config` when given).
fn load(file: &Path, config: Option<&Value>) -> noiseshift::Result<()> {
    let w = WeightSet::open(&[file.to_path_buf()])?;
    MmditConfig::resolve(&w, config)?;
    Ok(())
}

#[test]
fn safetensors_with_mutated_bytes() {
    let bytes = std::fs::read(transformer()).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.safetensors");
    // Edits: (position, new byte), mostly inside the header (lengths, offsets, shapes, dtypes,
    // JSON structure), some in the data; and a truncation point.
    let edit = (0..header, any::<u8>());
    let strategy = (
        proptest::collection::vec(edit, 1..6),
        prop_oneof![Just(bytes.len()), 0..bytes.len()],
    );
    runner()
        .run(&strategy, |(edits, keep)| {
            let mut b = bytes.clone();
            for (at, v) in edits {
                b[at] = v;
            }
            b.truncate(keep);
            std::fs::write(&file, &b).unwrap();
            if let Err(e) = load(&file, None) {
                refused_cleanly(&e)?;
            }
            check_allocations()
        })
        .unwrap();
}

/// A JSON value of the kinds config files get wrong.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(3)),
        Just(json!(1_000_000_000u64)),
        Just(json!(u64::MAX)),
        Just(json!(2.5)),
        Just(json!(1e308)),
        Just(json!("2")),
        Just(json!(null)),
        Just(json!([1, 2])),
        Just(json!({"a": 1})),
        Just(json!(true)),
        (0u64..100_000).prop_map(|v| json!(v)),
    ]
}

#[test]
fn transformer_configs_with_hostile_values() {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("sd3-tiny/transformer/config.json")).unwrap(),
    )
    .unwrap();
    let keys = [
        "num_layers",
        "num_attention_heads",
        "attention_head_dim",
        "patch_size",
        "in_channels",
        "out_channels",
        "joint_attention_dim",
        "pooled_projection_dim",
        "pos_embed_max_size",
        "sample_size",
        "caption_projection_dim",
        "qk_norm",
        "dual_attention_layers",
    ];
    let strategy = proptest::collection::vec((0..keys.len(), hostile_value()), 1..4);
    runner()
        .run(&strategy, |edits| {
            let mut c = config.clone();
            for (k, v) in edits {
                c[keys[k]] = v;
            }
            if let Err(e) = load(&transformer(), Some(&c)) {
                refused_cleanly(&e)?;
            }
            check_allocations()
        })
        .unwrap();
}

#[test]
fn tensors_with_hostile_shapes_and_dtypes() {
    let bytes = std::fs::read(transformer()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.safetensors");
    let dims = proptest::collection::vec(
        prop_oneof![Just(0usize), Just(1), 1usize..200, Just(1 << 20)],
        0..5,
    );
    let dtypes = prop_oneof![
        Just(safetensors::Dtype::F32),
        Just(safetensors::Dtype::F16),
        Just(safetensors::Dtype::BF16),
        Just(safetensors::Dtype::I64),
        Just(safetensors::Dtype::U8),
    ];
    let strategy = (0..names.len(), dims, dtypes, any::<bool>());
    runner()
        .run(&strategy, |(which, shape, dtype, drop)| {
            // The edited tensor gets data of exactly its new size (a consistent file), so the
            // loaders' shape checks are what is tested, not the safetensors parser.
            let mut views = Vec::new();
            let mut owned = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let v = st.tensor(name).unwrap();
                if i == which {
                    if drop {
                        continue;
                    }
                    // Shapes too large to write here (or to count) keep the original tensor.
                    let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
                        views.push((name.clone(), st.tensor(name).unwrap()));
                        continue;
                    };
                    if n.saturating_mul(dtype.bitsize() / 8) > 1 << 22 {
                        views.push((name.clone(), st.tensor(name).unwrap()));
                        continue;
                    }
                    owned.push((
                        name.clone(),
                        dtype,
                        shape.clone(),
                        vec![0u8; n * (dtype.bitsize() / 8)],
                    ));
                } else {
                    views.push((name.clone(), v));
                }
            }
            let mut all: Vec<(String, safetensors::tensor::TensorView)> = views;
            for (n, d, s, b) in &owned {
                all.push((
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                ));
            }
            std::fs::write(&file, safetensors::serialize(all, None).unwrap()).unwrap();
            if let Err(e) = load(&file, None) {
                refused_cleanly(&e)?;
            }
            check_allocations()
        })
        .unwrap();
}

#[test]
fn embeddings_and_latents_files_with_mutated_bytes() {
    let source = fixtures().join("generate/sd3-tiny-6x10-b2-cfg/embeds.safetensors");
    let bytes = std::fs::read(&source).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.safetensors");
    let strategy = proptest::collection::vec((0..header, any::<u8>()), 1..5);
    runner()
        .run(&strategy, |edits| {
            let mut b = bytes.clone();
            for (at, v) in edits {
                b[at] = v;
            }
            std::fs::write(&file, &b).unwrap();
            if let Err(e) = tensor_file::read(&file) {
                refused_cleanly(&e)?;
            }
            check_allocations()
        })
        .unwrap();
}

#[test]
fn tokenizer_folders_with_mutated_files() {
    let source = fixtures().join("text/clip-l-tokenizer");
    let files = ["vocab.json", "merges.txt", "tokenizer_config.json"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(source.join(f)).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let strategy = (
        0..files.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        any::<prop::sample::Index>(),
    );
    runner()
        .run(&strategy, |(which, edits, cut)| {
            for (i, f) in files.iter().enumerate() {
                let mut b = originals[i].clone();
                if i == which {
                    for (at, v) in &edits {
                        let at = at.index(b.len());
                        b[at] = *v;
                    }
                    b.truncate(cut.index(b.len() + 1).max(1));
                }
                std::fs::write(dir.path().join(f), b).unwrap();
            }
            match PromptTokenizer::clip(dir.path()) {
                Err(e) => refused_cleanly(&e)?,
                Ok(tok) => {
                    if let Err(e) = tok.encode("a photo of a cat, 東京 🙂") {
                        refused_cleanly(&e)?;
                    }
                }
            }
            check_allocations()
        })
        .unwrap();
}

/// A valid two-step table (NOISESHIFT.md's format) as JSON.
fn valid_table() -> Value {
    let step = |sigma: f64, next: f64, hat: f64| {
        json!({"sigma": sigma, "sigma_next": next, "sigma_hat": hat, "loss_nominal": 0.2,
               "loss_calibrated": 0.1, "candidates": 42, "sigma_hat_stderr": 0.001, "edge": false})
    };
    json!({
        "format": "noiseshift-calibration/1",
        "model": {"family": "sd3", "name": "m", "fingerprint": "f"},
        "resolution": {"width": 64, "height": 64},
        "schedule": {"steps": 2, "shift": 3.0, "mu": null},
        "search": {"coarse_window": 0.1, "coarse_stride": 0.01, "fine_window": 0.01,
                   "fine_stride": 0.001, "widen": false, "samples": 8, "seed": 0,
                   "guidance": 1.0, "dataset": "d"},
        "steps": [step(1.0, 0.5, 0.9), step(0.5, 0.0, 0.4)],
        "device": "cpu", "elapsed_seconds": 1.0, "created": "2026-01-01T00:00:00Z"
    })
}

#[test]
fn calibration_tables_with_hostile_fields() {
    use noiseshift::noiseshift::table::Table;
    let paths: [&[&str]; 12] = [
        &["steps", "0", "sigma_hat"],
        &["steps", "1", "sigma_hat"],
        &["steps", "0", "sigma"],
        &["steps", "1", "sigma"],
        &["steps", "0", "sigma_next"],
        &["steps", "1", "loss_calibrated"],
        &["steps", "0", "sigma_hat_stderr"],
        &["steps"],
        &["schedule", "steps"],
        &["schedule", "shift"],
        &["resolution", "width"],
        &["format"],
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    let unit = prop_oneof![
        Just(json!(5.0)),
        Just(json!(-0.5)),
        Just(json!(1e308)),
        Just(json!(0.95)),
        (0.0f64..1.0).prop_map(|v| json!(v)),
    ];
    let value = prop_oneof![unit, hostile_value(), Just(json!([]))];
    let strategy = proptest::collection::vec((0..paths.len(), value), 1..4);
    runner()
        .run(&strategy, |edits| {
            let mut t = valid_table();
            for (p, v) in edits {
                // An earlier edit may have replaced a parent: then this edit has nothing to change.
                let (last, parents) = paths[p].split_last().unwrap();
                let mut at = Some(&mut t);
                for key in parents {
                    at = at.and_then(|a| match key.parse::<usize>() {
                        Ok(i) => a.get_mut(i),
                        Err(_) => a.get_mut(*key),
                    });
                }
                if let Some(obj) = at.and_then(Value::as_object_mut) {
                    obj.insert(last.to_string(), v);
                }
            }
            std::fs::write(&file, serde_json::to_vec(&t).unwrap()).unwrap();
            match Table::read(&file) {
                Err(e) => refused_cleanly(&e)?,
                // What is accepted is what NOISESHIFT.md allows.
                Ok(table) => {
                    let mut bound = 1.0;
                    for s in &table.steps {
                        prop_assert!((0.0..=bound).contains(&s.sigma_hat), "{:?}", s);
                        prop_assert!(s.sigma_next < s.sigma);
                        bound = s.sigma_hat;
                    }
                    prop_assert!(table.steps.len() <= table.schedule.steps);
                }
            }
            check_allocations()
        })
        .unwrap();
}

#[test]
fn numeric_flags_with_hostile_values() {
    use clap::Parser;
    use noiseshift::cli::Cli;
    let flags = [
        ("generate", "--steps"),
        ("generate", "--guidance"),
        ("generate", "--shift"),
        ("generate", "--batch"),
        ("generate", "--width"),
        ("calibrate", "--coarse-stride"),
        ("calibrate", "--fine-stride"),
        ("calibrate", "--bootstrap"),
        ("calibrate", "--samples"),
        ("calibrate", "--steps"),
    ];
    let value = prop_oneof![
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1e308".to_string()),
        Just("18446744073709551615".to_string()),
        Just("1e-12".to_string()),
        Just("1000000000".to_string()),
        "[0-9]{1,25}",
        any::<f64>().prop_map(|v| v.to_string()),
    ];
    runner()
        .run(&(0..flags.len(), value), |(k, v)| {
            let (cmd, flag) = flags[k];
            let mut argv = vec!["noiseshift", cmd, flag, &v];
            if cmd == "calibrate" {
                argv.extend(["--width", "64", "--height", "64", "--dataset", "d"]);
            }
            if let Err(e) = Cli::try_parse_from(argv) {
                prop_assert_eq!(e.exit_code(), 2, "{}", e);
            }
            Ok(())
        })
        .unwrap();
}
