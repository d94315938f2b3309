//! The calibration table (format "noiseshift-calibration/1", key names fixed by NOISESHIFT.md):
//! reading, writing (atomically), matching against a generation request, and reusing a table
//! for another step count or shift by piecewise-linear interpolation in sigma.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, input};
use crate::tensor_file::write_atomic;

pub const FORMAT: &str = "noiseshift-calibration/1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub family: String,
    pub name: String,
    pub fingerprint: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Resolution {
    pub width: usize,
    pub height: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Schedule {
    pub steps: usize,
    pub shift: f64,
    /// Dynamic-shift mu (FLUX); null for fixed shifts.
    pub mu: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Search {
    pub coarse_window: f64,
    pub coarse_stride: f64,
    pub fine_window: f64,
    pub fine_stride: f64,
    pub widen: bool,
    pub samples: usize,
    pub seed: u64,
    pub guidance: f64,
    pub dataset: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub sigma: f64,
    pub sigma_next: f64,
    pub sigma_hat: f64,
    /// Loss at s = sigma_i (no calibration).
    pub loss_nominal: f64,
    /// Loss at s = sigma_hat.
    pub loss_calibrated: f64,
    /// Candidates evaluated (coarse and fine).
    pub candidates: usize,
    /// Bootstrap standard error of sigma_hat over the samples.
    pub sigma_hat_stderr: f64,
    /// The coarse winner sat on the edge of the searched window (the optimum may lie outside).
    #[serde(default)]
    pub edge: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Table {
    pub format: String,
    pub model: ModelInfo,
    pub resolution: Resolution,
    pub schedule: Schedule,
    pub search: Search,
    pub steps: Vec<Step>,
    pub device: String,
    pub elapsed_seconds: f64,
    pub created: String,
}

/// What a generation run asks a table to fit.
pub struct Request<'a> {
    pub fingerprint: &'a str,
    pub resolution: Resolution,
    pub sigmas: &'a [f64],
    pub shift: f64,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        let table: Table = serde_json::from_str(&text).map_err(|e| {
            Error::Input(format!("{}: not a calibration table: {e}", path.display()))
        })?;
        if table.format != FORMAT {
            return input(format!(
                "{}: format '{}' is not {FORMAT}",
                path.display(),
                table.format
            ));
        }
        if table.steps.len() > table.schedule.steps {
            return input(format!(
                "{}: {} steps listed for a {}-step schedule",
                path.display(),
                table.steps.len(),
                table.schedule.steps
            ));
        }
        Ok(table)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Failure(e.to_string()))?;
        write_atomic(path, format!("{text}\n").as_bytes())
    }

    pub fn complete(&self) -> bool {
        self.steps.len() == self.schedule.steps
    }

    /// The conditioning levels for `req`: the table's own sigma_hat when it matches exactly;
    /// with `interpolate`, sigma_hat(sigma) read off the table's curve for another step count
    /// or shift. A different model or resolution is always refused. Returns the levels and,
    /// when interpolated, a note saying so.
    pub fn levels(
        &self,
        path: &Path,
        req: &Request<'_>,
        interpolate: bool,
    ) -> Result<(Vec<f64>, Option<String>)> {
        let p = path.display();
        if self.model.fingerprint != req.fingerprint {
            return input(format!(
                "{p} was calibrated for model fingerprint {} ({}), this model is {}",
                self.model.fingerprint, self.model.name, req.fingerprint
            ));
        }
        if self.resolution != req.resolution {
            return input(format!(
                "{p} was calibrated at {}x{}, this run is {}x{}",
                self.resolution.width,
                self.resolution.height,
                req.resolution.width,
                req.resolution.height
            ));
        }
        if !self.complete() {
            return input(format!(
                "{p} is incomplete ({} of {} steps); finish it with calibrate --resume",
                self.steps.len(),
                self.schedule.steps
            ));
        }
        let steps = req.sigmas.len() - 1;
        let same_schedule =
            self.schedule.steps == steps && (self.schedule.shift - req.shift).abs() < 1e-9;
        if same_schedule {
            return Ok((self.steps.iter().map(|s| s.sigma_hat).collect(), None));
        }
        if !interpolate {
            return input(format!(
                "{p} was calibrated for {} steps at shift {}, this run is {steps} steps at shift {}; pass \
                 --calibration-interpolate to reuse its sigma_hat(sigma) curve",
                self.schedule.steps, self.schedule.shift, req.shift
            ));
        }
        let levels = req.sigmas[..steps]
            .iter()
            .map(|&s| self.interpolate(s))
            .collect();
        let note = format!(
            "interpolated {p} ({} steps, shift {}) to {steps} steps at shift {}",
            self.schedule.steps, self.schedule.shift, req.shift
        );
        Ok((levels, Some(note)))
    }

    /// sigma_hat at `sigma`, linear between the table's points and towards (0, 0) below them.
    pub fn interpolate(&self, sigma: f64) -> f64 {
        let mut pts: Vec<(f64, f64)> = self.steps.iter().map(|s| (s.sigma, s.sigma_hat)).collect();
        pts.push((0.0, 0.0));
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts.dedup_by(|a, b| (a.0 - b.0).abs() < 1e-12);
        if sigma >= pts[pts.len() - 1].0 {
            return pts[pts.len() - 1].1;
        }
        let i = pts.partition_point(|p| p.0 <= sigma).max(1);
        let (a, b) = (pts[i - 1], pts[i]);
        a.1 + (b.1 - a.1) * (sigma - a.0) / (b.0 - a.0)
    }
}

/// calibrations/<model-name>/<W>x<H>-<N>steps.json under `root`.
pub fn default_path(root: &Path, model_name: &str, res: Resolution, steps: usize) -> PathBuf {
    root.join("calibrations")
        .join(model_name)
        .join(format!("{}x{}-{steps}steps.json", res.width, res.height))
}

/// Current UTC time, RFC 3339.
pub fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(points: &[(f64, f64)]) -> Table {
        Table {
            format: FORMAT.into(),
            model: ModelInfo {
                family: "sd3".into(),
                name: "m".into(),
                fingerprint: "f".into(),
            },
            resolution: Resolution {
                width: 64,
                height: 64,
            },
            schedule: Schedule {
                steps: points.len(),
                shift: 3.0,
                mu: None,
            },
            search: Search {
                coarse_window: 0.1,
                coarse_stride: 0.01,
                fine_window: 0.01,
                fine_stride: 0.001,
                widen: false,
                samples: 1,
                seed: 0,
                guidance: 1.0,
                dataset: "d".into(),
            },
            steps: points
                .iter()
                .map(|&(sigma, sigma_hat)| Step {
                    sigma,
                    sigma_next: 0.0,
                    sigma_hat,
                    loss_nominal: 1.0,
                    loss_calibrated: 1.0,
                    candidates: 1,
                    sigma_hat_stderr: 0.0,
                    edge: false,
                })
                .collect(),
            device: "cpu".into(),
            elapsed_seconds: 0.0,
            created: now_utc(),
        }
    }

    #[test]
    fn interpolation_is_piecewise_linear_through_the_points() {
        let t = table(&[(1.0, 0.9), (0.5, 0.3), (0.1, 0.05)]);
        assert!((t.interpolate(1.0) - 0.9).abs() < 1e-12);
        assert!((t.interpolate(0.75) - 0.6).abs() < 1e-12);
        assert!((t.interpolate(0.1) - 0.05).abs() < 1e-12);
        assert!((t.interpolate(0.05) - 0.025).abs() < 1e-12);
    }

    #[test]
    fn mismatches_are_refused_with_the_reason() {
        let t = table(&[(1.0, 0.9), (0.5, 0.3)]);
        let sig = [1.0, 0.5, 0.0];
        let req = |fp, w, shift| Request {
            fingerprint: fp,
            resolution: Resolution {
                width: w,
                height: 64,
            },
            sigmas: &sig,
            shift,
        };
        let p = Path::new("t.json");
        assert!(t.levels(p, &req("f", 64, 3.0), false).unwrap().1.is_none());
        let e = t
            .levels(p, &req("g", 64, 3.0), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fingerprint"), "{e}");
        let e = t
            .levels(p, &req("f", 128, 3.0), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("128x64"), "{e}");
        let e = t
            .levels(p, &req("f", 64, 2.0), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--calibration-interpolate"), "{e}");
        let (levels, note) = t.levels(p, &req("f", 64, 2.0), true).unwrap();
        assert_eq!(levels, vec![0.9, 0.3]);
        assert!(note.unwrap().contains("interpolated"));
    }
}
