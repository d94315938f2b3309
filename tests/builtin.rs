//! The built-in model end to end through the CLI, with no --model: prompt to PNG against
//! diffusers' own pipeline components (tests/fixtures/make_builtin_fixtures.py), uncalibrated at
//! its native 128 px and with its shipped 64 px NoiseShift table found by `--calibration auto`;
//! and `export-builtin` writing the folder diffusers loads.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The CLI with a fresh cache folder, so the first-use write of the model is exercised too.
fn noiseshift(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_noiseshift"));
    c.env_remove("NOISESHIFT_DEVICE")
        .env_remove("NOISESHIFT_MODEL")
        .env("NOISESHIFT_CACHE", cache);
    c
}

fn run(cmd: &mut Command) -> (i32, String) {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code().unwrap_or(-1), err)
}

/// Generate one fixture case from its latents and compare latents and pixels with diffusers'.
fn check_case(name: &str, calibration: &str) -> std::collections::HashMap<String, String> {
    let case_dir = fixtures().join("builtin").join(name);
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir.join("case.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (out, latents) = (dir.path().join("x.png"), dir.path().join("x.safetensors"));
    let (code, err) = run(noiseshift(&dir.path().join("cache"))
        .args(["generate", "--prompt", case["prompt"].as_str().unwrap()])
        .args([
            "--negative-prompt",
            "",
            "--calibration",
            calibration,
            "--latents",
        ])
        .arg(case_dir.join("latents.safetensors"))
        .arg("--out")
        .arg(&out)
        .arg("--output-latents")
        .arg(&latents));
    assert_eq!(code, 0, "{err}");
    let ours = read(&latents).remove("latents").unwrap();
    let want = read(&case_dir.join("expected.safetensors"))
        .remove("latents")
        .unwrap();
    assert_max_rel(name, &ours.data, &want.data, 1e-4);
    let (pixels, text) = read_png(&out);
    let (reference, _) = read_png(&case_dir.join("expected.png"));
    let diff = max_level_difference(&pixels, &reference);
    println!("{name}: max {diff} levels from diffusers");
    assert!(diff <= 2, "{name}: {diff} levels");
    assert_eq!(text["steps"], case["steps"].to_string());
    text
}

#[test]
fn the_default_model_makes_diffusers_image_from_a_prompt() {
    // auto: no table ships for the native size, so none is used
    let text = check_case("red-circle-128", "auto");
    assert_eq!(text["model"], "builtin");
    assert_eq!(text["size"], "128x128");
    assert_eq!(text["calibration"], "none");
}

#[test]
fn its_shipped_table_is_found_and_used_at_64_px() {
    let text = check_case("green-triangle-64-noiseshift", "auto");
    assert!(
        text["calibration"].ends_with("64x64-20steps.json"),
        "{:?}",
        text["calibration"]
    );
    // Another schedule at the same size finds no table.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let (code, err) = run(noiseshift(&dir.path().join("cache"))
        .args([
            "generate",
            "--prompt",
            "a blue square",
            "--width",
            "64",
            "--height",
            "64",
        ])
        .args(["--steps", "6", "--out"])
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_png(&out).1["calibration"], "none");
}

#[test]
fn export_builtin_writes_a_pipeline_folder_with_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("builtin");
    let (code, err) = run(noiseshift(&dir.path().join("cache"))
        .arg("export-builtin")
        .arg(&folder));
    assert_eq!(code, 0, "{err}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("model_index.json")).unwrap())
            .unwrap();
    assert_eq!(index["_class_name"], "StableDiffusion3Pipeline");
    for table in ["64x64-20steps.json", "96x96-20steps.json"] {
        assert!(folder.join("calibrations").join(table).exists(), "{table}");
    }
    // The same weights as the embedded model: the same fingerprint.
    let inspect = |model: Option<&Path>| {
        let mut c = noiseshift(&dir.path().join("cache"));
        c.args(["inspect", "--json"]);
        if let Some(m) = model {
            c.arg(m);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["fingerprint"].clone()
    };
    assert_eq!(inspect(None), inspect(Some(&folder)));
    // A second export into a non-empty folder is refused.
    let (code, err) = run(noiseshift(&dir.path().join("cache"))
        .arg("export-builtin")
        .arg(&folder));
    assert_eq!(code, 2, "{err}");
}
