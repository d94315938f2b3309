//! The generation parameters an image carries: one text chunk per parameter, and one
//! `parameters` chunk as the A1111 web UI writes it (prompt, "Negative prompt: ...", then
//! "Steps: N, Sampler: Euler, CFG scale: G, Seed: S, Size: WxH, Model: NAME, ..."), which
//! image sites and ComfyUI read.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// What produced a batch of images.
pub struct Metadata {
    pub prompt: String,
    pub negative_prompt: String,
    /// The seed of row 0 (row r used seed + r); None when the latents came from a file.
    pub seed: Option<u64>,
    /// Where the conditioning or the latents came from when not from a prompt and a seed.
    pub source: Option<String>,
    pub steps: usize,
    pub guidance: f64,
    /// FLUX.1-dev: guidance is the model's input, not classifier-free guidance (Forge writes
    /// it as "Distilled CFG Scale" beside "CFG scale: 1").
    pub distilled_guidance: bool,
    pub shift: f64,
    /// The dynamic shift's mu (FLUX.1-dev), which replaces the static shift.
    pub mu: Option<f64>,
    pub width: usize,
    pub height: usize,
    pub model: String,
    pub fingerprint: String,
    /// The calibration table used, if any.
    pub calibration: Option<PathBuf>,
}

/// A short hash of a file's bytes ("unreadable" if it cannot be read).
pub fn file_fingerprint(path: &std::path::Path) -> String {
    match crate::files::read_capped(path, crate::files::TEXT_CAP) {
        Ok(bytes) => Sha256::digest(&bytes)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect(),
        Err(_) => "unreadable".into(),
    }
}

/// A value in A1111's comma-separated list, quoted when it holds a comma, colon or quote.
fn field(v: &str) -> String {
    if v.contains([',', ':', '"']) {
        serde_json::to_string(v).expect("a string serialises")
    } else {
        v.to_string()
    }
}

impl Metadata {
    /// The chunks of image `row` of the batch, or (None) of the batch's contact sheet.
    pub fn chunks(&self, row: Option<usize>) -> Vec<(String, String)> {
        let seed = match (self.seed, row) {
            (Some(s), Some(r)) => s.wrapping_add(r as u64).to_string(),
            (Some(s), None) => format!("{s} (row r: {s} + r)"),
            (None, _) => "none".to_string(),
        };
        let (table, table_fp) = match &self.calibration {
            Some(p) => (p.display().to_string(), file_fingerprint(p)),
            None => ("none".to_string(), "none".to_string()),
        };
        let version = format!("noiseshift {}", env!("CARGO_PKG_VERSION"));
        let size = format!("{}x{}", self.width, self.height);
        let mut list = vec![
            format!("Steps: {}", self.steps),
            "Sampler: Euler".to_string(),
        ];
        if self.distilled_guidance {
            list.push("CFG scale: 1".into());
            list.push(format!("Distilled CFG Scale: {}", self.guidance));
        } else {
            list.push(format!("CFG scale: {}", self.guidance));
        }
        let shift = match self.mu {
            Some(mu) => format!("dynamic (mu {mu:.4})"),
            None => self.shift.to_string(),
        };
        if self.seed.is_some() {
            list.push(format!("Seed: {}", field(&seed)));
        }
        list.extend([
            format!("Size: {size}"),
            format!("Model: {}", field(&self.model)),
            format!("Model hash: {}", self.fingerprint),
            format!("Shift: {}", field(&shift)),
            format!("NoiseShift: {}", field(&table)),
        ]);
        if let Some(s) = &self.source {
            list.push(format!("Source: {}", field(s)));
        }
        list.push(format!("Version: {}", field(&version)));
        let parameters = format!(
            "{}\nNegative prompt: {}\n{}",
            self.prompt,
            self.negative_prompt,
            list.join(", ")
        );
        let mut chunks = vec![
            ("prompt", self.prompt.clone()),
            ("negative_prompt", self.negative_prompt.clone()),
            ("seed", seed),
            ("steps", self.steps.to_string()),
            ("guidance", self.guidance.to_string()),
            ("shift", shift),
            ("size", size),
            ("model", self.model.clone()),
            ("model_fingerprint", self.fingerprint.clone()),
            ("calibration", table),
            ("calibration_fingerprint", table_fp),
            ("software", version),
            ("parameters", parameters),
        ];
        if let Some(s) = &self.source {
            chunks.push(("source", s.clone()));
        }
        chunks
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}
