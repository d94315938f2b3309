//! The NoiseShift calibration engine and the `calibrate` command: the closed-form Gaussian
//! check of NOISESHIFT.md, batched = unbatched, bounds and monotonicity, agreement with the
//! fixture script's independent search on a tiny SD3, resume, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use noiseshift::noiseshift::search::{Engine, Memo, SearchConfig};
use noiseshift::noiseshift::table::Table;
use noiseshift::schedule::sd3_sigmas;
use noiseshift::tensor_file::{self, HostTensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn gaussian_data(s_d: f64, samples: usize, seed: u64) -> (HostTensor, HostTensor) {
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = vec![samples, 4, 16, 16];
    let n: usize = shape.iter().product();
    let d = Normal::new(0.0, s_d).unwrap();
    let x0: Vec<f32> = (0..n).map(|_| d.sample(&mut rng) as f32).collect();
    let eps: Vec<f32> = (0..n)
        .map(|_| Normal::new(0.0f32, 1.0).unwrap().sample(&mut rng))
        .collect();
    (
        HostTensor::new(shape.clone(), x0),
        HostTensor::new(shape, eps),
    )
}

fn config(sigmas: Vec<f64>, widen: bool, batch: usize) -> SearchConfig {
    SearchConfig {
        sigmas,
        coarse_window: 0.1,
        coarse_stride: 0.01,
        fine_window: 0.01,
        fine_stride: 0.001,
        widen,
        adaptive: None,
        batch,
        bootstrap: 50,
        seed: 3,
    }
}

/// The exact loss of this very data at step sigma, as a function of the conditioning s:
/// mean (a(s) x_i - (eps - x0))^2 = a(s)^2 V - 2 a(s) C + U with the data's moments.
fn exact_loss(x0: &HostTensor, eps: &HostTensor, sigma: f64, s_m: f64) -> impl Fn(f64) -> f64 {
    let (mut v, mut c, mut u) = (0.0, 0.0, 0.0);
    for (x, e) in x0.data.iter().zip(&eps.data) {
        let (x, e) = (f64::from(*x), f64::from(*e));
        let xi = (1.0 - sigma) * x + sigma * e;
        v += xi * xi;
        c += xi * (e - x);
        u += (e - x) * (e - x);
    }
    let n = x0.data.len() as f64;
    move |s: f64| (a(s, s_m).powi(2) * v - 2.0 * a(s, s_m) * c + u) / n
}

/// The exact minimiser over [0, upper] by dense evaluation.
fn exact_minimiser(loss: &impl Fn(f64) -> f64, upper: f64) -> f64 {
    let n = 200_000;
    (0..=n)
        .map(|k| upper * k as f64 / n as f64)
        .min_by(|p, q| loss(*p).total_cmp(&loss(*q)))
        .unwrap()
}

#[test]
fn closed_form_gaussian_interior_bound_and_outside_the_window() {
    let gpu = gpu();
    // (s_d, s_m, widen). Data a little quieter than the model believes moves the optimum a
    // little above sigma (interior); much quieter or noisier data moves it far, outside the
    // first coarse window, and against the bound sigma_hat_{i-1}.
    let cases = [
        (0.97, 1.0, false),
        (0.8, 1.0, true),
        (0.25, 1.0, true),
        (1.6, 1.0, true),
        (0.8, 1.0, false),
    ];
    let sigmas = sd3_sigmas(6, 3.0);
    let (mut saw_interior, mut saw_bound, mut saw_far, mut saw_edge) = (false, false, false, false);
    for (s_d, s_m, widen) in cases {
        let (x0, eps) = gaussian_data(s_d, 6, 11);
        let model = Gaussian { s_m };
        let engine = Engine::new(
            &gpu,
            &model,
            x0.clone(),
            eps.clone(),
            config(sigmas.clone(), widen, 64),
        )
        .unwrap();
        let mut upper = 1.0;
        for i in 0..6 {
            let r = engine
                .step(i, &[upper], &mut Memo::default(), &mut |_, _| Ok(()))
                .unwrap();
            let loss = exact_loss(&x0, &eps, r.step.sigma, s_m);
            let exact = exact_minimiser(&loss, upper);
            println!(
                "s_d {s_d} s_m {s_m} widen {widen} step {i}: sigma {:.5} engine {:.5} exact {exact:.5} (upper {upper:.5}, edge {})",
                r.step.sigma, r.step.sigma_hat, r.step.edge
            );
            assert!(r.step.sigma_hat <= upper + 1e-12 && r.step.sigma_hat >= 0.0);
            if !widen && r.step.edge {
                // The optimum lies beyond the coarse window, which the summary says.
                assert!(
                    (exact - r.step.sigma).abs() > 0.09,
                    "step {i}: flagged an edge for an optimum at {exact}"
                );
                saw_edge = true;
            } else {
                // Within one fine stride of the exact minimiser, unless the curve is so flat there
                // that the two losses agree to the f32 precision of the GPU's sums.
                let flat = (loss(r.step.sigma_hat) - loss(exact)) / loss(exact) < 1e-6;
                assert!(
                    (r.step.sigma_hat - exact).abs() <= 0.001 + 1e-9 || flat,
                    "step {i}: {} vs exact {exact}",
                    r.step.sigma_hat
                );
                assert!(
                    r.step.loss_calibrated <= r.step.loss_nominal * (1.0 + 1e-12)
                        || r.step.sigma > upper
                );
            }
            // The constrained optimum sits on the bound sigma_hat_{i-1} (or 1).
            let at_bound = exact >= upper - 1e-9;
            saw_bound |= at_bound;
            saw_far |= widen && (r.step.sigma_hat - r.step.sigma).abs() > 0.1 + 1e-9;
            saw_interior |= !at_bound
                && (r.step.sigma_hat - r.step.sigma).abs() > 0.002
                && (r.step.sigma_hat - r.step.sigma).abs() < 0.09;
            upper = r.step.sigma_hat;
        }
    }
    assert!(
        saw_interior && saw_bound && saw_far && saw_edge,
        "cases did not cover interior {saw_interior}, bound {saw_bound}, far {saw_far}, edge {saw_edge}"
    );
}

#[test]
fn without_widen_an_outside_optimum_is_flagged_at_the_edge() {
    let gpu = gpu();
    let (x0, eps) = gaussian_data(0.25, 4, 5);
    let model = Gaussian { s_m: 1.0 };
    let sigmas = sd3_sigmas(6, 3.0);
    let engine = Engine::new(&gpu, &model, x0, eps, config(sigmas, false, 64)).unwrap();
    let r = engine
        .step(2, &[0.99], &mut Memo::default(), &mut |_, _| Ok(()))
        .unwrap();
    assert!(r.step.edge, "{r:?}");
    assert!(
        ((r.coarse_winner - r.step.sigma).abs() - 0.1).abs() < 1e-9,
        "{r:?}"
    );
}

fn fixture_dataset() -> PathBuf {
    fixtures().join("calibration/dataset.safetensors")
}

/// `noiseshift calibrate` on sd3-tiny at 64x64, shift 3, with data arguments `data`
/// (`--dataset FILE` or `--images DIR`), then `extra`, writing to `out`.
fn calibrate_cmd(data: &[&std::ffi::OsStr], out: &Path, extra: &[&str]) -> Command {
    let mut c = noiseshift_cmd();
    c.args(["calibrate", "--model"])
        .arg(fixtures().join("sd3-tiny"))
        .args(["--width", "64", "--height", "64", "--shift", "3"])
        .args(data)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

/// Calibrate on the fixture dataset.
fn calibrate(out: &Path, extra: &[&str]) -> std::process::Output {
    let dataset = fixture_dataset();
    calibrate_cmd(&["--dataset".as_ref(), dataset.as_os_str()], out, extra)
        .output()
        .unwrap()
}

#[test]
fn tiny_sd3_matches_the_independent_reference_search() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("table.json");
    let plot = dir.path().join("plot.png");
    let o = calibrate(&out, &["--steps", "4", "--plot", plot.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("model evaluations") && stdout.contains("per second"),
        "{stdout}"
    );
    assert!(plot.exists());

    // The table uses NOISESHIFT.md's key names exactly.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for key in [
        "format",
        "model",
        "resolution",
        "schedule",
        "search",
        "steps",
        "evaluations",
        "device",
        "elapsed_seconds",
        "created",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    // A complete table carries no step in progress; the grid costs 42 candidates x 6 samples
    // per step here (fewer where the bound clips).
    assert!(json.get("partial").is_none());
    assert_eq!(json["search"]["mode"], "grid");
    let evaluations = json["evaluations"].as_u64().unwrap();
    assert!(
        evaluations > 0 && evaluations <= 4 * 43 * 6,
        "{evaluations}"
    );
    for key in ["family", "name", "fingerprint"] {
        assert!(json["model"].get(key).is_some(), "missing model.{key}");
    }
    for key in ["steps", "shift", "mu"] {
        assert!(
            json["schedule"].get(key).is_some(),
            "missing schedule.{key}"
        );
    }
    for key in [
        "sigma",
        "sigma_next",
        "sigma_hat",
        "loss_nominal",
        "loss_calibrated",
        "candidates",
        "sigma_hat_stderr",
    ] {
        assert!(json["steps"][0].get(key).is_some(), "missing steps[].{key}");
    }
    assert_eq!(json["format"], "noiseshift-calibration/1");

    let ours = Table::read(&out).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("calibration/reference.json")).unwrap(),
    )
    .unwrap();
    let want = reference["steps_table"].as_array().unwrap();
    assert_eq!(ours.steps.len(), want.len());
    let mut previous = 1.0;
    for (i, (got, want)) in ours.steps.iter().zip(want).enumerate() {
        let hat = want["sigma_hat"].as_f64().unwrap();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        let ln = rel(got.loss_nominal, want["loss_nominal"].as_f64().unwrap());
        let lc = rel(
            got.loss_calibrated,
            want["loss_calibrated"].as_f64().unwrap(),
        );
        println!(
            "step {i}: sigma_hat {} vs {hat}; loss rel. errors {ln:.1e}, {lc:.1e}",
            got.sigma_hat
        );
        assert!((got.sigma_hat - hat).abs() <= 0.001 + 1e-9, "step {i}");
        assert!(ln <= 1e-3 && lc <= 1e-3, "step {i}");
        assert!((got.sigma - want["sigma"].as_f64().unwrap()).abs() < 1e-7);
        // Monotone and bounded.
        assert!(got.sigma_hat <= previous + 1e-12 && got.sigma_hat >= 0.0);
        previous = got.sigma_hat;
    }
}

#[test]
fn batched_equals_one_candidate_per_forward() {
    let gpu = gpu();
    let model = load_model(&gpu, "sd3-tiny");
    let mut t = read(&fixture_dataset());
    let x0 = t.remove("x0").unwrap();
    let noise = t.remove("noise").unwrap();
    let samples = x0.shape[0];
    let velocity = noiseshift::noiseshift::velocity::TransformerVelocity::new(
        &model,
        t.remove("prompt_embeds").unwrap(),
        t.remove("pooled_prompt_embeds").unwrap(),
        None,
        1.0,
    );
    let sigmas = sd3_sigmas(3, 3.0);
    let run = |batch: usize| {
        let engine = Engine::new(
            &gpu,
            &velocity,
            x0.clone(),
            noise.clone(),
            config(sigmas.clone(), false, batch),
        )
        .unwrap();
        let mut upper = 1.0;
        (0..2)
            .map(|i| {
                let r = engine
                    .step(i, &[upper], &mut Memo::default(), &mut |_, _| Ok(()))
                    .unwrap();
                upper = r.step.sigma_hat;
                (
                    r.step.sigma_hat,
                    r.step.loss_nominal,
                    r.step.loss_calibrated,
                    r.coarse,
                    r.fine,
                )
            })
            .collect::<Vec<_>>()
    };
    let one = run(samples);
    let all = run(64);
    assert_eq!(
        one, all,
        "tables differ between one candidate per forward and all candidates per forward"
    );
}

#[test]
fn identity_table_reproduces_uncalibrated_generation() {
    let dir = tempfile::tempdir().unwrap();
    let case = fixtures().join("generate/sd3-tiny-8x8-b1");
    let out = dir.path().join("cal.json");
    let o = calibrate(
        &out,
        &[
            "--steps",
            "4",
            "--samples",
            "2",
            "--coarse-window",
            "0.01",
            "--fine-window",
            "0.001",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Make every sigma_hat equal its sigma.
    let mut table = Table::read(&out).unwrap();
    for s in &mut table.steps {
        s.sigma_hat = s.sigma;
    }
    table.write(&out).unwrap();
    let generate = |calibration: &str, name: &str| {
        let path = dir.path().join(name);
        let o = noiseshift_cmd()
            .args(["generate", "--model"])
            .arg(fixtures().join("sd3-tiny"))
            .arg("--embeds")
            .arg(case.join("embeds.safetensors"))
            .arg("--latents")
            .arg(case.join("latents.safetensors"))
            .args([
                "--steps",
                "4",
                "--guidance",
                "1",
                "--shift",
                "3",
                "--calibration",
                calibration,
                "--output-latents",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            std::fs::read(&path).unwrap(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (plain, _) = generate("none", "plain.safetensors");
    let (calibrated, log) = generate(out.to_str().unwrap(), "calibrated.safetensors");
    assert!(
        log.contains("calibration:") && log.contains("cal.json"),
        "{log}"
    );
    assert_eq!(plain, calibrated);
    // A real table changes the result, and a table for another step count is refused.
    let mut shifted = Table::read(&out).unwrap();
    shifted.steps[1].sigma_hat -= 0.05;
    shifted.write(&out).unwrap();
    let (moved, _) = generate(out.to_str().unwrap(), "moved.safetensors");
    assert_ne!(plain, moved);
    let o = noiseshift_cmd()
        .args(["generate", "--model"])
        .arg(fixtures().join("sd3-tiny"))
        .arg("--embeds")
        .arg(case.join("embeds.safetensors"))
        .arg("--latents")
        .arg(case.join("latents.safetensors"))
        .args([
            "--steps",
            "5",
            "--guidance",
            "1",
            "--calibration",
            out.to_str().unwrap(),
            "--output-latents",
        ])
        .arg(dir.path().join("never.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("4 steps") && err.contains("--calibration-interpolate"),
        "{err}"
    );
    assert!(!dir.path().join("never.safetensors").exists());
}

#[test]
fn resume_after_a_kill_gives_the_same_table() {
    // Both searches: the adaptive one's later steps start from the earlier steps' answers,
    // which a resumed run reads back from the table.
    for search in ["grid", "adaptive"] {
        resume_after_a_kill(search);
    }
}

fn resume_after_a_kill(search: &str) {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.json");
    let args = ["--steps", "6", "--samples", "3", "--search", search];
    let o = calibrate(&whole, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(Table::read(&whole).unwrap().search.mode, search);

    let cut = dir.path().join("cut.json");
    let dataset = fixture_dataset();
    let mut child = calibrate_cmd(&["--dataset".as_ref(), dataset.as_os_str()], &cut, &args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once two steps are saved.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        if let Ok(t) = Table::read(&cut)
            && t.steps.len() >= 2
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no partial table appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = Table::read(&cut).unwrap();
    assert!(
        partial.steps.len() < 6,
        "the run finished before it could be interrupted"
    );
    let o = calibrate(&cut, &[&args[..], &["--resume"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming"));
    let (a, b) = (Table::read(&whole).unwrap(), Table::read(&cut).unwrap());
    assert_eq!(a.steps, b.steps);
    assert_eq!(
        (a.model, a.schedule, a.search),
        (b.model, b.schedule, b.search)
    );
    // Resuming with other settings is refused.
    let o = calibrate(
        &cut,
        &[
            "--steps",
            "6",
            "--samples",
            "2",
            "--search",
            search,
            "--resume",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("other settings"));
}

/// SIGKILL at seeded random moments of a chain of resumed runs: after every kill the table on
/// disk is absent or valid (never partial), and the chain ends at the uninterrupted table.
#[test]
fn kill_9_at_random_points_leaves_a_valid_table_and_resume_completes_it() {
    const KILL_POINTS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.json");
    let args = ["--steps", "6", "--samples", "3", "--resume"];
    let started = std::time::Instant::now();
    let o = calibrate(&whole, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full_run = started.elapsed();

    let cut = dir.path().join("cut.json");
    let dataset = fixture_dataset();
    let mut rng = StdRng::seed_from_u64(21);
    let mut interrupted = 0;
    for _ in 0..KILL_POINTS {
        let mut child = calibrate_cmd(&["--dataset".as_ref(), dataset.as_os_str()], &cut, &args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full_run.mul_f64(rng.random_range(0.0..1.0)));
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        interrupted += usize::from(!status.success());
        if cut.exists() {
            let t = Table::read(&cut).expect("a killed run left an unreadable table");
            assert!(t.steps.len() <= 6);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // a kill inside write_atomic may leave its own temporary file, nothing else
            .filter(|n| n != "whole.json" && n != "cut.json" && !n.starts_with(".cut.json.tmp"))
            .collect();
        assert!(leftovers.is_empty(), "files left: {leftovers:?}");
    }
    assert!(interrupted > 0, "no kill landed before a run finished");
    let o = calibrate(&cut, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (Table::read(&whole).unwrap(), Table::read(&cut).unwrap());
    assert_eq!(a.steps, b.steps);
}

/// Write a dataset with `edit` applied to the fixture's tensors.
fn broken_dataset(
    dir: &Path,
    name: &str,
    edit: impl Fn(&mut Vec<(String, HostTensor)>),
) -> PathBuf {
    let mut tensors: Vec<(String, HostTensor)> = tensor_file::read(&fixture_dataset())
        .unwrap()
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let path = dir.join(name);
    let refs: Vec<(&str, &HostTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tensor_file::write(&path, &refs).unwrap();
    path
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.json");
    let reshape = |name: &'static str, shape: Vec<usize>| {
        move |t: &mut Vec<(String, HostTensor)>| {
            let e = t.iter_mut().find(|(n, _)| n == name).unwrap();
            let n: usize = shape.iter().product();
            e.1 = HostTensor::new(shape.clone(), vec![0.5; n]);
        }
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            broken_dataset(
                dir.path(),
                "channels.safetensors",
                reshape("x0", vec![6, 4, 8, 8]),
            ),
            "channels",
        ),
        (
            broken_dataset(
                dir.path(),
                "size.safetensors",
                reshape("x0", vec![6, 16, 8, 10]),
            ),
            "does not match the requested 64x64",
        ),
        (
            broken_dataset(
                dir.path(),
                "noise.safetensors",
                reshape("noise", vec![6, 16, 8, 9]),
            ),
            "noise",
        ),
        (
            broken_dataset(
                dir.path(),
                "embeds.safetensors",
                reshape("prompt_embeds", vec![6, 7, 95]),
            ),
            "prompt_embeds",
        ),
        (
            broken_dataset(
                dir.path(),
                "count.safetensors",
                reshape("pooled_prompt_embeds", vec![5, 48]),
            ),
            "pooled_prompt_embeds",
        ),
        (
            broken_dataset(dir.path(), "no-embeds.safetensors", |t| {
                t.retain(|(n, _)| n != "prompt_embeds")
            }),
            "prompt_embeds",
        ),
    ];
    for (dataset, needle) in cases {
        let o = calibrate_cmd(
            &["--dataset".as_ref(), dataset.as_os_str()],
            &out,
            &["--steps", "2"],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", dataset.display());
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!out.exists());
    }
    // Images: an empty folder, then captions that do not match the images.
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let run_images = |extra: &[&str]| {
        calibrate_cmd(&["--images".as_ref(), images.as_os_str()], &out, extra)
            .output()
            .unwrap()
    };
    let o = run_images(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no PNG or JPEG images"));
    for name in ["a.png", "b.jpg"] {
        std::fs::write(images.join(name), b"not decoded before the VAE check").unwrap();
    }
    let captions = dir.path().join("captions.txt");
    std::fs::write(&captions, "c.png\ta caption for no image\n").unwrap();
    let o = run_images(&["--captions", captions.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("'c.png', which is not an image of the folder")
    );
    let o = run_images(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("vae"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());

    // A corrupt table given to generate.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"format\": \"noiseshift-calibration/1\", \"steps\": [",
    )
    .unwrap();
    let case = fixtures().join("generate/sd3-tiny-8x8-b1");
    let latents = dir.path().join("latents.safetensors");
    let o = noiseshift_cmd()
        .args(["generate", "--model"])
        .arg(fixtures().join("sd3-tiny"))
        .arg("--embeds")
        .arg(case.join("embeds.safetensors"))
        .args(["--guidance", "1", "--steps", "2", "--calibration"])
        .arg(&bad)
        .arg("--output-latents")
        .arg(&latents)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not a calibration table"), "{err}");
    assert!(!latents.exists());
}
