//! FLUX.1 through the CLI: `generate --prompt --out` on a tiny FluxPipeline folder (T5 and
//! CLIP-L, the shared VAE) against diffusers' FluxPipeline image and embeddings, `inspect`,
//! `calibrate` (the table records the dynamic shift's mu) and calibrated generation, and bad
//! input (exit code 2, a message naming the problem, no file written).

mod common;

use common::*;

fn flux() -> std::path::PathBuf {
    fixtures().join("flux")
}

fn case() -> serde_json::Value {
    let text = std::fs::read_to_string(flux().join("generate-dev/case.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn prompt_to_png_matches_flux_pipeline() {
    let c = case();
    let dir = tempfile::tempdir().unwrap();
    let (png, embeds) = (dir.path().join("x.png"), dir.path().join("e.safetensors"));
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(flux().join("dev-tiny"))
            .args(["--prompt", c["prompt"].as_str().unwrap()])
            .arg("--latents")
            .arg(flux().join("generate-dev/latents.safetensors"))
            .args(["--steps", "4", "--max-sequence-length", "16"])
            .args(["--calibration", "none", "--out"])
            .arg(&png)
            .arg("--output-embeds")
            .arg(&embeds),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("dynamic shift mu") || err.contains("wrote"),
        "{err}"
    );
    let ours = read(&embeds);
    let want = read(&flux().join("generate-dev/embeds.safetensors"));
    for k in ["prompt_embeds", "pooled_prompt_embeds"] {
        assert_eq!(ours[k].shape, want[k].shape, "{k}");
        assert_max_rel(k, &ours[k].data, &want[k].data, 1e-3);
    }
    let (pixels, text) = read_png(&png);
    let (expected, _) = read_png(&flux().join("generate-dev/expected.png"));
    let diff = max_level_difference(&pixels, &expected);
    println!("largest difference to FluxPipeline's image: {diff} of 255");
    assert!(diff <= 2, "{diff}");
    let params = &text["parameters"];
    assert!(
        params.contains("CFG scale: 1, Distilled CFG Scale: 3.5")
            && params.contains("Shift: dynamic (mu 0.4577)"),
        "{params}"
    );
}

#[test]
fn a_single_file_with_a_separate_vae_and_encoders_gives_the_same_image() {
    // flux1-dev.safetensors carries no VAE or text encoders: --vae takes the VAE from
    // elsewhere (ae.safetensors, or here the pipeline's vae/ folder); --config, a FluxPipeline
    // folder, gives the single file its RoPE split and lends its text encoders.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(flux().join("dev-tiny-single.safetensors"))
            .arg("--config")
            .arg(flux().join("dev-tiny"))
            .args(["--prompt", case()["prompt"].as_str().unwrap()])
            .args(["--max-sequence-length", "16"])
            .arg("--latents")
            .arg(flux().join("generate-dev/latents.safetensors"))
            .args(["--steps", "4", "--calibration", "none", "--out"])
            .arg(&png)
            .arg("--vae")
            .arg(flux().join("dev-tiny/vae")),
    );
    assert_eq!(code, 0, "{err}");
    let (pixels, _) = read_png(&png);
    let (expected, _) = read_png(&flux().join("generate-dev/expected.png"));
    assert!(max_level_difference(&pixels, &expected) <= 2);
    // Without --vae the single file cannot decode: said, nothing written.
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(flux().join("dev-tiny-single.safetensors"))
            .arg("--config")
            .arg(flux().join("dev-tiny"))
            .arg("--embeds")
            .arg(flux().join("generate-dev/embeds.safetensors"))
            .arg("--out")
            .arg(dir.path().join("y.png")),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--vae PATH"), "{err}");
}

#[test]
fn inspect_reports_dev_and_schnell() {
    for (model, config, family, depth) in [
        ("dev-tiny", None, "flux.1-dev", 4),
        (
            "schnell-tiny-single.safetensors",
            Some("schnell-tiny"),
            "flux.1-schnell",
            3,
        ),
    ] {
        let mut cmd = noiseshift_cmd();
        cmd.arg("inspect").arg(flux().join(model)).arg("--json");
        if let Some(c) = config {
            cmd.arg("--config").arg(flux().join(c));
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(json["family"], family);
        assert_eq!(json["depth"], depth);
        assert_eq!(json["guidance_embeds"], family == "flux.1-dev");
        assert_eq!(json["hidden"], 32);
        assert_eq!(json["head_dim"], 16);
    }
}

#[test]
fn calibrate_records_mu_and_generate_uses_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.json");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["calibrate", "--model"])
            .arg(flux().join("dev-tiny"))
            .args(["--width", "32", "--height", "32", "--steps", "2"])
            .args(["--bootstrap", "0", "--max-sequence-length", "8"])
            .args(["--coarse-window", "0.02", "--fine-window", "0.002"])
            .arg("--images")
            .arg(fixtures().join("vae/images"))
            .arg("--captions")
            .arg(fixtures().join("vae/images/captions.jsonl"))
            .arg("--out")
            .arg(&table),
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    // 32x32 px: (32/16)^2 = 4 packed tokens.
    let mu = json["schedule"]["mu"].as_f64().unwrap();
    assert!((mu - noiseshift::schedule::DynamicShift::FLUX.mu(32, 32)).abs() < 1e-12);
    assert_eq!(json["model"]["family"], "flux.1-dev");
    assert_eq!(json["search"]["guidance"], 3.5);
    let out = dir.path().join("l.safetensors");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(flux().join("dev-tiny"))
            .args(["--prompt", "a cat", "--max-sequence-length", "8"])
            .args(["--width", "32", "--height", "32", "--steps", "2"])
            .arg("--calibration")
            .arg(&table)
            .arg("--output-latents")
            .arg(&out),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("calibration: {}", table.display())),
        "{err}"
    );
    // Another size has another mu (and resolution): refused, naming it.
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(flux().join("dev-tiny"))
            .args(["--prompt", "a cat", "--max-sequence-length", "8"])
            .args(["--width", "48", "--height", "32", "--steps", "2"])
            .arg("--calibration")
            .arg(&table)
            .arg("--output-latents")
            .arg(dir.path().join("m.safetensors")),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("calibrated at 32x32"), "{err}");
}

#[test]
fn offload_on_streams_the_blocks_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for offload in ["off", "on"] {
        let out = dir.path().join(format!("{offload}.safetensors"));
        let (code, err) = generate_err(
            &flux().join("dev-tiny"),
            &["--offload", offload, "--steps", "3"],
            &out,
        );
        assert_eq!(code, 0, "{err}");
        if offload == "on" {
            assert!(
                err.contains("FLUX transformer: streaming layer by layer (--offload on)"),
                "{err}"
            );
        }
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(outputs[0] == outputs[1], "--offload on changed the latents");
    // A device too small for even one block: refused before any upload, with the sizes.
    let out = dir.path().join("none.safetensors");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .env("NOISESHIFT_DEVICE_MEMORY_GIB", "0.00001")
            .args(["generate", "--model"])
            .arg(flux().join("dev-tiny"))
            .arg("--embeds")
            .arg(flux().join("dev-tiny/forward.safetensors"))
            .args(["--batch", "2", "--calibration", "none", "--output-latents"])
            .arg(&out),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot run on this device even streaming its blocks"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `generate` with `extra` arguments on dev-tiny writing `out`: exit code and stderr.
fn generate_err(model: &std::path::Path, extra: &[&str], out: &std::path::Path) -> (i32, String) {
    run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(model)
            .arg("--embeds")
            .arg(flux().join("dev-tiny/forward.safetensors"))
            .args(["--calibration", "none", "--batch", "2"])
            .args(extra)
            .arg("--output-latents")
            .arg(out),
    )
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let dev = flux().join("dev-tiny");
    // A size that does not pack 2x2 into tokens of 16 pixels.
    let (code, err) = generate_err(&dev, &["--width", "40", "--height", "32"], &out);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("multiples of 16 pixels"), "{err}");
    // A latents file whose sides are not multiples of 16 pixels.
    let odd = dir.path().join("odd.safetensors");
    let latents = noiseshift::tensor_file::HostTensor::new(vec![2, 16, 5, 4], vec![0.1; 640]);
    noiseshift::tensor_file::write(&odd, &[("latents", &latents)]).unwrap();
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(&dev)
            .arg("--embeds")
            .arg(flux().join("dev-tiny/forward.safetensors"))
            .arg("--latents")
            .arg(&odd)
            .args(["--calibration", "none", "--output-latents"])
            .arg(&out),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("multiples of 16 pixels"), "{err}");
    // Guidance NaN never reaches the model.
    let (code, err) = generate_err(&dev, &["--guidance", "NaN", "--width", "32"], &out);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("guidance"), "{err}");
    // A single file with a block's tensor missing, then with a whole block gone from the
    // middle (refused, not read as a shorter model).
    let weights = read(&flux().join("dev-tiny-single.safetensors"));
    let broken = dir.path().join("broken.safetensors");
    let generate_without = |drop: &dyn Fn(&str) -> bool| {
        let kept: Vec<(&str, &noiseshift::tensor_file::HostTensor)> = weights
            .iter()
            .filter(|(k, _)| !drop(k))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        noiseshift::tensor_file::write(&broken, &kept).unwrap();
        let config = ["--config", dev.to_str().unwrap()];
        generate_err(
            &broken,
            &[&["--width", "32", "--height", "32"][..], &config].concat(),
            &out,
        )
    };
    let (code, err) = generate_without(&|k| k == "single_blocks.1.linear2.weight");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("single_blocks.1.linear2.weight"), "{err}");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .arg("inspect")
            .arg(&broken)
            .arg("--config")
            .arg(&dev),
    );
    assert_eq!(code, 0, "inspect reads headers only: {err}");
    let (code, err) = generate_without(&|k| k.starts_with("single_blocks.0."));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not all of the blocks before it"), "{err}");
    assert!(!out.exists());
}
