//! `noiseshift generate` as a user runs it, against diffusers' sampler on the tiny fixture
//! models (float64 reference): bf16 SD3, f16 SD3.5 with qk norm and MMDiT-X, the same weights
//! as an original single file, non-square latents, batch 2, CFG on and off, shift 3.

mod common;

use std::path::Path;

use common::*;

fn run_case(case: &str) {
    let dir = fixtures().join("generate").join(case);
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("latents.safetensors");
    let status = noiseshift_cmd()
        .args(["generate", "--model"])
        .arg(fixtures().join(spec["model"].as_str().unwrap()))
        .arg("--embeds")
        .arg(dir.join("embeds.safetensors"))
        .arg("--latents")
        .arg(dir.join("latents.safetensors"))
        .args([
            "--steps",
            &spec["steps"].to_string(),
            "--guidance",
            &spec["guidance"].to_string(),
        ])
        .args(["--shift", &spec["shift"].to_string()])
        .arg("--output-latents")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let got = read(&out_file).remove("latents").unwrap();
    let want = read(&dir.join("expected.safetensors"))
        .remove("latents")
        .unwrap();
    assert_eq!(got.shape, want.shape);
    assert_max_rel(case, &got.data, &want.data, 1e-4);
}

#[test]
fn sd3_bf16_no_guidance() {
    run_case("sd3-tiny-8x8-b1");
}

#[test]
fn sd3_nonsquare_batch2_cfg() {
    run_case("sd3-tiny-6x10-b2-cfg");
}

#[test]
fn sd35_f16_batch2_shared_embeds() {
    run_case("sd35-tiny-8x8-b2");
}

#[test]
fn sd35_single_file_cfg() {
    run_case("sd35-single-6x10-b1-cfg");
}

/// Run generate with `extra` args on the sd3 fixture; returns (exit code, stderr).
fn generate_err(extra: &[&str], output: &Path) -> (i32, String) {
    let case = fixtures().join("generate/sd3-tiny-8x8-b1");
    let o = noiseshift_cmd()
        .args(["generate", "--model"])
        .arg(fixtures().join("sd3-tiny"))
        .arg("--embeds")
        .arg(case.join("embeds.safetensors"))
        .arg("--output-latents")
        .arg(output)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bad_requests_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.safetensors");
    let cases: [(&[&str], &str); 7] = [
        (&["--output-embeds", "e.safetensors"], "needs --prompt"),
        (&["--out", "x.png", "--guidance", "1"], "vae"),
        (
            &["--width", "72", "--height", "64", "--guidance", "1"],
            "multiples of 16",
        ),
        (
            &["--width", "256", "--height", "64", "--guidance", "1"],
            "position grid",
        ),
        (&["--guidance", "7", "--steps", "2"], "negative"),
        (&["--steps", "0"], "--steps"),
        (&["--shift=-1", "--guidance", "1"], "--shift"),
    ];
    for (args, needle) in cases {
        let (code, err) = generate_err(args, &out);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{args:?} left an output file");
    }
    // Given latents work with the defaults; embeddings whose batch is neither the latents' nor 1 do not.
    let case = fixtures().join("generate/sd3-tiny-6x10-b2-cfg");
    let (code, err) = generate_err(
        &[
            "--latents",
            fixtures()
                .join("generate/sd3-tiny-8x8-b1/latents.safetensors")
                .to_str()
                .unwrap(),
            "--guidance",
            "1",
        ],
        &out,
    );
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(&out).unwrap();
    let o = noiseshift_cmd()
        .args(["generate", "--model"])
        .arg(fixtures().join("sd3-tiny"))
        .arg("--embeds")
        .arg(case.join("embeds.safetensors"))
        .args([
            "--seed",
            "1",
            "--batch",
            "3",
            "--guidance",
            "1",
            "--width",
            "64",
            "--height",
            "64",
            "--output-latents",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("batch 2") && err.contains("expected 3"),
        "{err}"
    );
    assert!(!out.exists());
    // --prompt on a model without text encoders names what is missing.
    let o = noiseshift_cmd()
        .args(["generate", "--model"])
        .arg(fixtures().join("sd3-tiny"))
        .args(["--prompt", "a cat", "--guidance", "1", "--output-latents"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("CLIP text encoders"), "{err}");
    assert!(!out.exists());
}

/// `generate --prompt` on the tiny SD3 pipeline folder (three text encoders and their
/// tokenizers) against diffusers' encode_prompt and sampler from the same starting latents.
fn prompt_case(case: &str, model: &[&str]) {
    let dir = fixtures().join("generate").join(case);
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (latents, embeds) = (
        out.path().join("l.safetensors"),
        out.path().join("e.safetensors"),
    );
    let image = out.path().join("x.png");
    let expected_png = dir.join("expected.png");
    let mut cmd = noiseshift_cmd();
    cmd.args(["generate", "--model"])
        .arg(fixtures().join(model[0]))
        .args(model[1..].iter().map(|a| match a.starts_with("--") {
            true => std::ffi::OsString::from(a),
            false => fixtures().join(a).into_os_string(),
        }))
        .args(["--prompt", spec["prompt"].as_str().unwrap()])
        .args([
            "--negative-prompt",
            spec["negative_prompt"].as_str().unwrap(),
        ])
        .arg("--latents")
        .arg(dir.join("latents.safetensors"))
        .args(["--steps", &spec["steps"].to_string()])
        .args(["--guidance", &spec["guidance"].to_string()])
        .args(["--shift", &spec["shift"].to_string()])
        .args([
            "--max-sequence-length",
            &spec["max_sequence_length"].to_string(),
        ])
        .arg("--output-latents")
        .arg(&latents)
        .arg("--output-embeds")
        .arg(&embeds);
    if !spec["t5"].as_bool().unwrap() {
        cmd.arg("--no-t5");
    }
    if expected_png.exists() {
        cmd.arg("--out").arg(&image);
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let mut got = read(&embeds);
    for (name, want) in read(&dir.join("embeds.safetensors")) {
        let g = got
            .remove(&name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(g.shape, want.shape, "{name}");
        assert_max_rel(&format!("{case} {name}"), &g.data, &want.data, 1e-3);
    }
    let got = read(&latents).remove("latents").unwrap();
    let want = read(&dir.join("expected.safetensors"))
        .remove("latents")
        .unwrap();
    assert_max_rel(
        &format!("{case} final latents"),
        &got.data,
        &want.data,
        1e-3,
    );
}

#[test]
fn prompt_with_t5_and_guidance_matches_diffusers() {
    prompt_case("pipeline-cfg-t5", &["sd3-pipeline-tiny"]);
}

#[test]
fn prompt_from_single_file_with_tokenizers_from_config() {
    // The same weights in the original layout (text_encoders.* keys); a single file has no
    // tokenizers, so --config names a pipeline folder to take them from.
    prompt_case(
        "pipeline-cfg-t5",
        &[
            "sd3-pipeline-tiny-single.safetensors",
            "--config",
            "sd3-pipeline-tiny",
        ],
    );
}

#[test]
fn prompt_without_t5_matches_diffusers() {
    prompt_case("pipeline-no-t5", &["sd3-pipeline-tiny"]);
}

#[test]
fn seeded_noise_is_reproducible_and_sizes_default_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let (code, err) = generate_err(
            &[
                "--seed",
                "7",
                "--steps",
                "2",
                "--guidance",
                "1",
                "--batch",
                "2",
            ],
            &out,
        );
        assert_eq!(code, 0, "{err}");
        read(&out).remove("latents").unwrap()
    };
    let a = run("a.safetensors");
    let b = run("b.safetensors");
    // The fixture's config has sample_size 16: 128 px native, 16x16 latents.
    assert_eq!(a.shape, vec![2, 16, 16, 16]);
    assert_eq!(a.data, b.data);
}
