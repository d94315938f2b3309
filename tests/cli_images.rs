//! Pixels through the CLI: `generate --out` on a tiny SD3 pipeline folder with a VAE against
//! diffusers' decoded image, batches and contact sheets, the PNG text chunks, `decode`,
//! `calibrate --images`, and bad input (exit code 2, a message naming the problem, no file).

mod common;

use std::path::Path;

use common::*;

fn case() -> std::path::PathBuf {
    fixtures().join("generate/sd3-tiny-8x8-b1")
}

fn pipeline() -> std::path::PathBuf {
    fixtures().join("vae/sd3-pipeline")
}

#[test]
fn generate_out_matches_diffusers_decoded_image_and_carries_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(pipeline())
            .arg("--embeds")
            .arg(case().join("embeds.safetensors"))
            .arg("--latents")
            .arg(case().join("latents.safetensors"))
            .args([
                "--steps",
                "4",
                "--guidance",
                "1",
                "--shift",
                "3",
                "--calibration",
                "none",
                "--out",
            ])
            .arg(&out),
    );
    assert_eq!(code, 0, "{err}");
    let (ours, text) = read_png(&out);
    let (want, _) = read_png(&pipeline().join("expected.png"));
    let diff = max_level_difference(&ours, &want);
    println!("generate --out against diffusers: max {diff} levels");
    assert!(diff <= 2, "{diff} levels");
    for key in [
        "prompt",
        "negative_prompt",
        "steps",
        "guidance",
        "shift",
        "size",
        "model",
        "model_fingerprint",
        "calibration",
        "calibration_fingerprint",
        "software",
    ] {
        assert!(text.contains_key(key), "no {key} chunk: {text:?}");
    }
    assert_eq!(text["steps"], "4");
    assert_eq!(text["size"], "64x64");
    assert_eq!(text["calibration"], "none");
    let params = &text["parameters"];
    assert!(params.contains("\nNegative prompt: \nSteps: 4, Sampler: Euler, CFG scale: 1, Size: 64x64, Model: sd3-pipeline"), "{params}");
}

#[test]
fn batch_rows_equal_single_runs_of_seed_plus_r_and_decode_reproduces_images() {
    let dir = tempfile::tempdir().unwrap();
    let generate = |out: &Path, seed: &str, batch: &str, extra: &[&str]| {
        let (code, err) = run_cmd(
            noiseshift_cmd()
                .args(["generate", "--model"])
                .arg(pipeline())
                .arg("--embeds")
                .arg(case().join("embeds.safetensors"))
                .args([
                    "--steps",
                    "2",
                    "--guidance",
                    "1",
                    "--width",
                    "32",
                    "--height",
                    "48",
                ])
                .args(["--seed", seed, "--batch", batch, "--out"])
                .arg(out)
                .args(extra),
        );
        assert_eq!(code, 0, "{err}");
    };
    let latents = dir.path().join("l.safetensors");
    generate(
        &dir.path().join("b.png"),
        "3",
        "2",
        &["--grid", "--output-latents", latents.to_str().unwrap()],
    );
    generate(&dir.path().join("one.png"), "4", "1", &[]);
    let (row1, text1) = read_png(&dir.path().join("b-1.png"));
    let (single, _) = read_png(&dir.path().join("one.png"));
    assert_eq!(
        row1, single,
        "row 1 of seed 3 is the batch-1 image of seed 4"
    );
    assert_eq!(text1["seed"], "4");
    assert!(dir.path().join("b-0.png").exists());
    let (grid, _) = read_png(&dir.path().join("b-grid.png"));
    assert_eq!(grid.len(), (2 * 32 + 4) * 48 * 3, "two cells side by side");
    // decode of the written latents gives the same images.
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["decode", "--model"])
            .arg(pipeline())
            .arg("--latents")
            .arg(&latents)
            .arg("--out")
            .arg(dir.path().join("d.png")),
    );
    assert_eq!(code, 0, "{err}");
    let (decoded, text) = read_png(&dir.path().join("d-1.png"));
    assert_eq!(decoded, row1);
    assert!(text.contains_key("vae_fingerprint"));
}

#[test]
fn calibrate_from_an_images_folder() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.json");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["calibrate", "--model"])
            .arg(pipeline())
            .args([
                "--width",
                "32",
                "--height",
                "32",
                "--steps",
                "2",
                "--bootstrap",
                "0",
            ])
            .arg("--images")
            .arg(fixtures().join("vae/images"))
            .arg("--captions")
            .arg(fixtures().join("vae/images/captions.jsonl"))
            .arg("--embeds")
            .arg(case().join("embeds.safetensors"))
            .arg("--out")
            .arg(&table),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("d_small.png (20x24) is smaller than 32x32: upscaled"),
        "{err}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert_eq!(json["steps"].as_array().unwrap().len(), 2);
    assert_eq!(json["search"]["samples"], 5);
}

#[test]
fn calibrate_images_with_captions_through_the_text_encoders() {
    // The pipeline with text encoders and a VAE: captions (and the empty prompt as negative,
    // with guidance) are encoded, no --embeds needed.
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.json");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["calibrate", "--model"])
            .arg(fixtures().join("sd3-pipeline-tiny"))
            .args([
                "--width",
                "32",
                "--height",
                "32",
                "--steps",
                "2",
                "--bootstrap",
                "0",
            ])
            .args(["--guidance", "2", "--max-sequence-length", "8"])
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
    assert_eq!(json["steps"].as_array().unwrap().len(), 2);
    let dataset = json["search"]["dataset"].as_str().unwrap();
    assert!(
        dataset.contains("captions through the text encoders"),
        "{dataset}"
    );
}

#[test]
fn bad_images_and_mismatched_vaes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("never.json");
    let calibrate = |images: &Path, extra: &[&str]| {
        run_cmd(
            noiseshift_cmd()
                .args(["calibrate", "--model"])
                .arg(pipeline())
                .args([
                    "--width", "32", "--height", "32", "--steps", "1", "--images",
                ])
                .arg(images)
                .arg("--out")
                .arg(&table)
                .args(extra),
        )
    };
    let embeds = case().join("embeds.safetensors");
    let embeds = embeds.to_str().unwrap();
    // Unreadable, truncated and 16-bit files are skipped, each named; 2 usable of 5.
    let (code, err) = calibrate(
        &fixtures().join("vae/bad-images"),
        &["--embeds", embeds, "--samples", "3"],
    );
    assert_eq!(code, 2, "{err}");
    for name in ["b_truncated.png", "c_not_an_image.png", "d_sixteen_bit.png"] {
        assert!(
            err.contains("skipping") && err.contains(name),
            "{name}: {err}"
        );
    }
    assert!(err.contains("2 usable images, fewer than the 3"), "{err}");
    // Captions without embeddings need the text encoders.
    let (code, err) = calibrate(&fixtures().join("vae/images"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("text encoders") && err.contains("--embeds"),
        "{err}"
    );
    assert!(!table.exists());
    // A pipeline whose VAE has 4 latent channels for a 16-channel transformer.
    let bad = dir.path().join("pipeline");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        pipeline().join("model_index.json"),
        bad.join("model_index.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(pipeline().join("transformer"), bad.join("transformer")).unwrap();
    std::os::unix::fs::symlink(fixtures().join("vae/quant-tiny-vae"), bad.join("vae")).unwrap();
    let out = dir.path().join("x.png");
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(&bad)
            .arg("--embeds")
            .arg(case().join("embeds.safetensors"))
            .args(["--steps", "1", "--guidance", "1", "--out"])
            .arg(&out),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("4 latent channels, the transformer 16"),
        "{err}"
    );
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["decode", "--model"])
            .arg(pipeline())
            .arg("--latents")
            .arg(case().join("latents.safetensors"))
            .arg("--out")
            .arg(dir.path().join("x.jpg")),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must be a .png"), "{err}");
    assert!(!out.exists());
}

#[test]
fn calibrate_self_equals_generate_then_calibrate_images() {
    // --self N: N images generated at the native resolution (image k from seed + k), downsampled
    // and encoded, captioned by their prompt. The same images written by `generate` and read
    // back through --images with those captions must give the very same table.
    let dir = tempfile::tempdir().unwrap();
    let prompt = "a tiny test prompt";
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(&prompts, format!("\n{prompt}\n\n")).unwrap();
    let common = ["--max-sequence-length", "8", "--seed", "5"];
    let calibrate = |data: &[&std::ffi::OsStr], out: &Path| {
        let (code, err) = run_cmd(
            noiseshift_cmd()
                .args(["calibrate", "--model"])
                .arg(fixtures().join("sd3-pipeline-tiny"))
                .args([
                    "--width",
                    "32",
                    "--height",
                    "32",
                    "--steps",
                    "2",
                    "--bootstrap",
                    "0",
                ])
                .args(common)
                .args(data)
                .arg("--out")
                .arg(out),
        );
        assert_eq!(code, 0, "{err}");
        err
    };
    let own = dir.path().join("self.json");
    let log = calibrate(
        &[
            "--self".as_ref(),
            "3".as_ref(),
            "--prompts".as_ref(),
            prompts.as_os_str(),
        ],
        &own,
    );
    assert!(log.contains("self-generating"), "{log}");

    // The same images through generate (native 128 px, its default steps and guidance).
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let (code, err) = run_cmd(
        noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(fixtures().join("sd3-pipeline-tiny"))
            .args(["--prompt", prompt, "--batch", "3"])
            .args(common)
            .arg("--out")
            .arg(images.join("img.png")),
    );
    assert_eq!(code, 0, "{err}");
    let captions = dir.path().join("captions.tsv");
    let lines: String = (0..3).map(|r| format!("img-{r}.png\t{prompt}\n")).collect();
    std::fs::write(&captions, lines).unwrap();
    let read_back = dir.path().join("images.json");
    calibrate(
        &[
            "--images".as_ref(),
            images.as_os_str(),
            "--captions".as_ref(),
            captions.as_os_str(),
        ],
        &read_back,
    );
    let (a, b) = (
        noiseshift::noiseshift::table::Table::read(&own).unwrap(),
        noiseshift::noiseshift::table::Table::read(&read_back).unwrap(),
    );
    assert_eq!(a.steps, b.steps);
    assert!(
        a.search
            .dataset
            .starts_with("self-generated: 3 images at 128x128 (seeds 5..=7")
            && a.search.dataset.contains("prompts.txt (1 prompts"),
        "{}",
        a.search.dataset
    );
}
