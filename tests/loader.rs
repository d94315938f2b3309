//! Malformed model files give errors that name the problem, the tensor and the file; never a
//! panic. Files are derived from the sd3-tiny fixture and broken on purpose.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use noiseshift::models::mmdit::Mmdit;
use noiseshift::weights::{ModelPath, WeightSet};
use noiseshift_kernels::{Gpu, GpuOptions};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn source() -> PathBuf {
    fixtures().join("sd3-tiny/transformer/diffusion_pytorch_model.safetensors")
}

/// Copy the sd3-tiny transformer into a bare transformer folder, editing tensors on the way:
/// `edit(name)` returns None to drop a tensor, or its (dtype, shape, bytes).
fn rewrite(
    dir: &Path,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) -> PathBuf {
    let bytes = std::fs::read(source()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut kept = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(t) = edit(
            &name,
            view.dtype(),
            view.shape().to_vec(),
            view.data().to_vec(),
        ) {
            kept.push((name, t));
        }
    }
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("diffusion_pytorch_model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("sd3-tiny/transformer/config.json"),
        out.join("config.json"),
    )
    .unwrap();
    out
}

fn load_err(gpu: &Gpu, model: &Path) -> String {
    let path = ModelPath::resolve(model).unwrap();
    let weights = WeightSet::open(&path.transformer_files).unwrap();
    match Mmdit::load(gpu, &weights, path.config.as_ref()) {
        Ok(_) => panic!("{} loaded", model.display()),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        }
    }
}

#[test]
fn missing_misshapen_and_wrongly_typed_tensors() {
    let gpu = gpu();
    let dir = tempfile::tempdir().unwrap();
    let missing = rewrite(&dir.path().join("a"), |n, d, s, b| {
        (n != "transformer_blocks.1.ff.net.2.weight").then_some((d, s, b))
    });
    let e = load_err(&gpu, &missing);
    assert!(
        e.contains("missing tensor 'transformer_blocks.1.ff.net.2.weight'")
            && e.contains("diffusion_pytorch_model.safetensors"),
        "{e}"
    );

    let misshapen = rewrite(&dir.path().join("b"), |n, d, s, b| {
        Some(if n == "context_embedder.weight" {
            (d, vec![s[1], s[0]], b)
        } else {
            (d, s, b)
        })
    });
    // The folder's config.json and the transposed tensor disagree: both values are named.
    let e = load_err(&gpu, &misshapen);
    assert!(
        e.contains("joint_attention_dim = 96") && e.contains("the weights have 64"),
        "{e}"
    );

    let wrong_dtype = rewrite(&dir.path().join("c"), |n, d, s, b| {
        Some(if n == "proj_out.weight" {
            (Dtype::I16, s, b)
        } else {
            (d, s, b)
        })
    });
    let e = load_err(&gpu, &wrong_dtype);
    assert!(e.contains("'proj_out.weight'") && e.contains("I16"), "{e}");

    // q and k stored in different dtypes cannot be fused into one matrix.
    let mixed = rewrite(&dir.path().join("d"), |n, d, s, b| {
        if n != "transformer_blocks.0.attn.to_k.weight" {
            return Some((d, s, b));
        }
        let wide: Vec<u8> = b
            .chunks(2)
            .flat_map(|c| {
                half::bf16::from_le_bytes([c[0], c[1]])
                    .to_f32()
                    .to_le_bytes()
            })
            .collect();
        Some((Dtype::F32, s, wide))
    });
    let e = load_err(&gpu, &mixed);
    assert!(e.contains("to_k.weight") && e.contains("f32"), "{e}");
}

#[test]
fn tensor_larger_than_the_device_allows() {
    let gpu = Gpu::new(&GpuOptions {
        max_buffer_bytes: Some(4096),
        ..Default::default()
    })
    .unwrap();
    let e = load_err(&gpu, &fixtures().join("sd3-tiny"));
    assert!(
        e.contains("tensor '")
            && e.contains("diffusion_pytorch_model.safetensors")
            && e.contains("limit"),
        "{e}"
    );
}

fn inspect(path: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_noiseshift"))
        .arg("inspect")
        .arg(path)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn corrupt_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(source()).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let truncated = write("truncated.safetensors", &good[..good.len() - 100]);
    let mut past_end = good.clone();
    past_end[..8].copy_from_slice(&(good.len() as u64 * 2).to_le_bytes());
    let past_end = write("past_end.safetensors", &past_end);
    // Two tensors whose byte ranges overlap.
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut overlap = (header.len() as u64).to_le_bytes().to_vec();
    overlap.extend_from_slice(header);
    overlap.extend_from_slice(&[0u8; 12]);
    let overlap = write("overlap.safetensors", &overlap);
    let garbage = write("garbage.safetensors", b"not a safetensors file at all");
    for (path, needle) in [
        (&truncated, "truncated.safetensors"),
        (&past_end, "past_end.safetensors"),
        (&overlap, "invalid offset for tensor `b`"),
        (&garbage, "garbage.safetensors"),
    ] {
        let (code, err) = inspect(path);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, err) = inspect(&empty);
    assert_eq!(code, 2);
    assert!(err.contains("not a model"), "{err}");
    let (code, err) = inspect(&dir.path().join("nonexistent"));
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn inspect_reports_the_contract_keys() {
    for (model, family, format, dual) in [
        ("sd3-tiny", "sd3", "diffusers", vec![]),
        ("sd35-tiny", "sd3.5-medium", "diffusers", vec![0]),
        (
            "sd35-tiny-single.safetensors",
            "sd3.5-medium",
            "single-file",
            vec![0],
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_noiseshift"))
            .args(["inspect", "--json"])
            .arg(fixtures().join(model))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["family"], family);
        assert_eq!(j["format"], format);
        assert_eq!(j["heads"], 2);
        assert_eq!(j["hidden"], 64);
        assert_eq!(j["pos_embed_max_size"], 12);
        assert_eq!(j["qk_norm"], family != "sd3");
        assert_eq!(j["dual_attention_layers"], serde_json::json!(dual));
        assert!(j["parameters"].as_u64().unwrap() > 100_000);
        assert!(j["bytes"].as_u64().unwrap() > 2 * 100_000);
        assert!(
            j["components"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "transformer")
        );
        assert_eq!(j["depth"], if family == "sd3" { 2 } else { 3 });
    }
}
