//! `noiseshift devices` and `noiseshift profile` as a user runs them: the JSON contracts the
//! issue names, the Chrome trace, a model forward, and bad flags.

mod common;

use std::process::{Command, Output};

use common::fixtures;
use serde_json::Value;

fn noiseshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_noiseshift"))
        .env_remove("NOISESHIFT_DEVICE")
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn devices_lists_every_adapter_with_features_and_limits() {
    let list = json_of(&noiseshift(&["devices", "--json"]));
    let adapters = list.as_array().unwrap();
    assert!(!adapters.is_empty());
    for a in adapters {
        for key in ["name", "backend", "device_type", "driver"] {
            assert!(a[key].is_string(), "{key} in {a}");
        }
        for key in ["shader_f16", "subgroup", "timestamp_query"] {
            assert!(a[key].is_boolean(), "{key} in {a}");
        }
        assert!(a["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    }
}

/// Kernel summaries carry the keys scripts rely on, with sane values.
fn check_kernels(report: &Value, must_have: &[&str]) {
    assert!(report["ceilings"]["gflops"].as_f64().unwrap() > 0.0);
    assert!(report["ceilings"]["gbps"].as_f64().unwrap() > 0.0);
    let kernels = report["kernels"].as_array().unwrap();
    for k in kernels {
        assert!(k["dispatches"].as_u64().unwrap() > 0, "{k}");
        for key in ["total_ms", "gflops", "gbps", "ceiling_fraction"] {
            assert!(k[key].as_f64().unwrap() >= 0.0, "{key} in {k}");
        }
    }
    let names: Vec<&str> = kernels
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    for name in must_have {
        assert!(
            names.iter().any(|n| n.starts_with(name)),
            "{name} missing from {names:?}"
        );
    }
}

#[test]
fn profile_suite_json_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let out = noiseshift(&[
        "profile",
        "--tokens",
        "9",
        "--reps",
        "1",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let report = json_of(&out);
    check_kernels(
        &report,
        &[
            "linear",
            "attention",
            "layer_norm",
            "modulate",
            "gated_residual",
            "conv",
        ],
    );
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e["ph"] == "X" && e["dur"].is_number())
    );
}

#[test]
fn profile_model_forward() {
    let model = fixtures().join("sd3-tiny");
    let report = json_of(&noiseshift(&[
        "profile",
        "--model",
        model.to_str().unwrap(),
        "--width",
        "64",
        "--height",
        "48",
        "--json",
    ]));
    check_kernels(&report, &["linear", "attention", "layer_norm"]);
}

#[test]
fn profile_bad_flags_exit_2() {
    let model = fixtures().join("sd3-tiny");
    let model = model.to_str().unwrap();
    for args in [
        &["profile", "--tokens", "0"][..],
        &["profile", "--model", "/nonexistent/model"][..],
        &["profile", "--model", model, "--width", "60"][..],
    ] {
        let out = noiseshift(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}
