//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use noiseshift::models::joint::TextConditioning;
use noiseshift::models::transformer::{Placement, Transformer};
use noiseshift::noiseshift::search::VelocityModel;
use noiseshift::tensor_file::{self, HostTensor};
use noiseshift::weights::{ModelPath, WeightSet};
use noiseshift_kernels::{Gpu, GpuOptions, Tensor, test_adapters};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The default adapter.
pub fn gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).expect("a wgpu adapter (install mesa-vulkan-drivers)")
}

/// One context per adapter the tests run on (`test_adapters`: Vulkan and GL on the software
/// drivers).
pub fn all_gpus() -> Vec<Gpu> {
    test_adapters()
        .iter()
        .map(|a| {
            Gpu::new(&GpuOptions {
                device: Some(a.index.to_string()),
                ..Default::default()
            })
            .unwrap()
        })
        .collect()
}

/// A fixture model; its weights live as long as the test process (FLUX may stream from them).
pub fn load_model(gpu: &Gpu, name: &str) -> Transformer<'static> {
    let path = ModelPath::resolve(&fixtures().join(name)).unwrap();
    let weights = Box::leak(Box::new(WeightSet::open(&path.transformer_files).unwrap()));
    Transformer::load(gpu, weights, path.config.as_ref(), Placement::RESIDENT).unwrap()
}

pub fn read(path: &Path) -> std::collections::HashMap<String, HostTensor> {
    tensor_file::read(path).unwrap()
}

pub fn text(gpu: &Gpu, embeds: &HostTensor, pooled: &HostTensor) -> TextConditioning {
    TextConditioning {
        embeds: embeds.upload(gpu).unwrap(),
        pooled: pooled.upload(gpu).unwrap(),
    }
}

/// max |ours - ref| / max |ref|, printed, and asserted below `tol`.
pub fn assert_max_rel(what: &str, ours: &[f32], reference: &[f32], tol: f64) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let max_ref = reference
        .iter()
        .fold(0.0f64, |m, v| m.max(f64::from(*v).abs()));
    let max_err = ours.iter().zip(reference).fold(0.0f64, |m, (a, b)| {
        m.max((f64::from(*a) - f64::from(*b)).abs())
    });
    let rel = max_err / max_ref.max(1e-30);
    println!("{what}: max|ours - ref| / max|ref| = {rel:.2e} (max|ref| = {max_ref:.3})");
    assert!(
        ours.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    assert!(rel <= tol, "{what}: error {rel:.2e} > {tol:.0e}");
    rel
}

/// RGB bytes and text chunks of a PNG.
pub fn read_png(path: &Path) -> (Vec<u8>, std::collections::HashMap<String, String>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let meta = reader.info();
    let mut text: std::collections::HashMap<String, String> = meta
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &meta.utf8_text {
        text.insert(c.keyword.clone(), c.get_text().unwrap());
    }
    (buf, text)
}

pub fn max_level_difference(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

/// a(sigma; s): the optimal linear velocity for data N(0, s^2), v = a x.
pub fn a(sigma: f64, s: f64) -> f64 {
    (sigma - (1.0 - sigma) * s * s) / ((1.0 - sigma).powi(2) * s * s + sigma * sigma)
}

/// A model that learned data std `s_m`: v(x, level) = a(level; s_m) x, row by row.
pub struct Gaussian {
    pub s_m: f64,
}

impl VelocityModel for Gaussian {
    fn velocity(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        levels: &[f64],
        _samples: &[usize],
    ) -> noiseshift::Result<Tensor> {
        let data = x.to_vec(gpu)?;
        let row = data.len() / levels.len();
        let v: Vec<f32> = data
            .iter()
            .enumerate()
            .map(|(i, &xv)| (a(levels[i / row], self.s_m) * f64::from(xv)) as f32)
            .collect();
        Ok(Tensor::from_f32(gpu, x.shape(), &v)?)
    }
}

/// The binary under test, without the environment's device and model choices.
pub fn noiseshift_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_noiseshift"));
    c.env_remove("NOISESHIFT_DEVICE")
        .env_remove("NOISESHIFT_MODEL");
    c
}

/// Run `cmd`: its exit code and stderr, which must not hold a panic.
pub fn run_cmd(cmd: &mut std::process::Command) -> (i32, String) {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code().unwrap_or(-1), err)
}
