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
    /// "grid" (the exhaustive coarse-to-fine grid) or "adaptive"; tables from before the
    /// adaptive search have no mode and were made by the grid.
    #[serde(default = "grid_mode")]
    pub mode: String,
    /// The adaptive search's own settings (absent for the grid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<Adaptive>,
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

fn grid_mode() -> String {
    "grid".into()
}

/// The adaptive search's settings (`calibrate --search adaptive`; search/race.rs says how each
/// is used).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Adaptive {
    /// Spacing of the pilot race's candidates across the coarse window.
    pub pilot_stride: f64,
    /// Samples every pilot candidate is first scored on; survivors get twice as many per round.
    pub first_samples: usize,
    /// A pilot candidate leaves the race once its paired mean loss difference to the current
    /// best exceeds z standard errors.
    pub z: f64,
    /// Line-search steps on all samples after the start, at most.
    pub refinements: usize,
    /// Start each step after the first from the earlier steps' offsets sigma_hat - sigma
    /// instead of a pilot race (tables from before it raced every step).
    #[serde(default)]
    pub follow: bool,
    /// With `follow`, still race every step, and start from the race's basin where it left
    /// the trend's neighbourhood.
    #[serde(default)]
    pub race_every_step: bool,
    /// The line search stops where its next level is one fine stride from the best and the
    /// interpolated loss there is lower by at most this fraction of the best's (0: off, as in
    /// tables from before it).
    #[serde(default)]
    pub stop_gain: f64,
}

/// The step in progress when a run stopped: every level evaluated so far with the losses of
/// its first samples (the search only ever evaluates sample prefixes). `--resume` replays the
/// step from these numbers, so a run stopped mid-race goes on where it was.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Partial {
    pub step: usize,
    pub levels: Vec<PartialLevel>,
    /// The adaptive search's per-sample squared velocity differences between levels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distances: Vec<PartialDistance>,
    /// Rows run again after an earlier resume (their velocities are not saved).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recomputed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartialDistance {
    pub a: f64,
    pub b: f64,
    pub values: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartialLevel {
    pub level: f64,
    pub losses: Vec<f64>,
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
    /// Model evaluations (candidate x sample rows) the search of the listed steps cost.
    #[serde(default)]
    pub evaluations: usize,
    /// The step in progress of an interrupted run (absent once a table is complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
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
    /// The dynamic shift's mu (FLUX.1-dev), which sets the whole schedule.
    pub mu: Option<f64>,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table> {
        let text = crate::files::read_text(path)?;
        let table: Table = serde_json::from_str(&text).map_err(|e| {
            Error::Input(format!("{}: not a calibration table: {e}", path.display()))
        })?;
        table
            .validate()
            .map_err(|why| Error::Input(format!("{}: {why}", path.display())))?;
        Ok(table)
    }

    /// What NOISESHIFT.md requires of a table, checked before any value is used: a message
    /// naming the field when something is off.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format '{}' is not {FORMAT}", self.format));
        }
        if self.schedule.steps == 0 || self.schedule.steps > crate::schedule::MAX_STEPS {
            return Err(format!(
                "schedule.steps {} is outside 1..={}",
                self.schedule.steps,
                crate::schedule::MAX_STEPS
            ));
        }
        if self.steps.len() > self.schedule.steps {
            return Err(format!(
                "{} steps listed for a {}-step schedule",
                self.steps.len(),
                self.schedule.steps
            ));
        }
        if !(self.schedule.shift.is_finite() && self.schedule.shift > 0.0) {
            return Err(format!(
                "schedule.shift {} is not a positive number",
                self.schedule.shift
            ));
        }
        if self.resolution.width == 0 || self.resolution.height == 0 {
            return Err("resolution has a zero side".into());
        }
        let mut bound = 1.0;
        for (i, st) in self.steps.iter().enumerate() {
            let unit = |name: &str, v: f64| {
                if v.is_finite() && (0.0..=1.0).contains(&v) {
                    Ok(())
                } else {
                    Err(format!("steps[{i}].{name} = {v} is outside [0, 1]"))
                }
            };
            unit("sigma", st.sigma)?;
            unit("sigma_next", st.sigma_next)?;
            unit("sigma_hat", st.sigma_hat)?;
            for (name, v) in [
                ("loss_nominal", st.loss_nominal),
                ("loss_calibrated", st.loss_calibrated),
                ("sigma_hat_stderr", st.sigma_hat_stderr),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!(
                        "steps[{i}].{name} = {v} is not a finite non-negative number"
                    ));
                }
            }
            if st.sigma_next >= st.sigma {
                return Err(format!(
                    "steps[{i}]: sigma_next {} is not below sigma {}",
                    st.sigma_next, st.sigma
                ));
            }
            if let Some(next) = self.steps.get(i + 1)
                && (next.sigma - st.sigma_next).abs() > 1e-9
            {
                return Err(format!(
                    "steps[{}].sigma {} is not steps[{i}].sigma_next {}",
                    i + 1,
                    next.sigma,
                    st.sigma_next
                ));
            }
            if st.sigma_hat > bound + 1e-12 {
                return Err(format!(
                    "steps[{i}].sigma_hat {} rises above the previous step's {bound} (sigma_hat never \
                     increases)",
                    st.sigma_hat
                ));
            }
            bound = st.sigma_hat;
        }
        if let Some(p) = &self.partial {
            if p.step != self.steps.len() {
                return Err(format!(
                    "partial.step {} is not the first missing step {}",
                    p.step,
                    self.steps.len()
                ));
            }
            for (k, l) in p.levels.iter().enumerate() {
                if !(l.level.is_finite() && (0.0..=1.0).contains(&l.level)) {
                    return Err(format!(
                        "partial.levels[{k}].level = {} is outside [0, 1]",
                        l.level
                    ));
                }
                if l.losses.len() > self.search.samples {
                    return Err(format!(
                        "partial.levels[{k}] has {} losses for {} samples",
                        l.losses.len(),
                        self.search.samples
                    ));
                }
                if let Some(v) = l.losses.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                    return Err(format!(
                        "partial.levels[{k}] holds the loss {v}, not a finite non-negative number"
                    ));
                }
            }
        }
        Ok(())
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
        if let (Some(a), Some(b)) = (self.schedule.mu, req.mu)
            && (a - b).abs() > 1e-9
        {
            return input(format!(
                "{p} was calibrated for the dynamic shift mu {a}, this run's is {b} (mu follows the image size)"
            ));
        }
        if self.schedule.mu.is_some() != req.mu.is_some() {
            let says = |m: Option<f64>| match m {
                Some(mu) => format!("the dynamic shift mu {mu}"),
                None => "a static shift".to_string(),
            };
            return input(format!(
                "{p} was calibrated with {}, this run samples with {}",
                says(self.schedule.mu),
                says(req.mu)
            ));
        }
        let steps = req.sigmas.len() - 1;
        let same_schedule =
            self.schedule.steps == steps && (self.schedule.shift - req.shift).abs() < 1e-9;
        if same_schedule {
            if let Some((i, st)) = self
                .steps
                .iter()
                .enumerate()
                .find(|(i, st)| (st.sigma - req.sigmas[*i]).abs() > 1e-6)
            {
                return input(format!(
                    "{p}: steps[{i}].sigma is {}, this run's schedule has {}",
                    st.sigma, req.sigmas[i]
                ));
            }
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
                mode: "grid".into(),
                adaptive: None,
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
                .enumerate()
                .map(|(i, &(sigma, sigma_hat))| Step {
                    sigma,
                    sigma_next: points.get(i + 1).map_or(0.0, |p| p.0),
                    sigma_hat,
                    loss_nominal: 1.0,
                    loss_calibrated: 1.0,
                    candidates: 1,
                    sigma_hat_stderr: 0.0,
                    edge: false,
                })
                .collect(),
            evaluations: 0,
            partial: None,
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
            mu: None,
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

    #[test]
    fn tables_that_break_the_format_are_refused_naming_the_field() {
        assert_eq!(table(&[(1.0, 0.9), (0.5, 0.3)]).validate(), Ok(()));
        type Breaker = dyn Fn(&mut Table);
        let cases: [(&Breaker, &str); 8] = [
            (&|t| t.steps[1].sigma_hat = 5.0, "steps[1].sigma_hat = 5"),
            (
                &|t| t.steps[0].sigma_hat = -0.5,
                "steps[0].sigma_hat = -0.5",
            ),
            (&|t| t.steps[1].sigma_hat = 0.95, "rises above"),
            (&|t| t.steps[0].loss_nominal = f64::NAN, "loss_nominal"),
            (&|t| t.steps.swap(0, 1), "sigma_next"),
            (&|t| t.schedule.steps = 0, "schedule.steps"),
            (
                &|t| t.schedule.steps = 1,
                "2 steps listed for a 1-step schedule",
            ),
            (&|t| t.format = "x".into(), "format 'x'"),
        ];
        for (break_it, expect) in cases {
            let mut t = table(&[(1.0, 0.9), (0.5, 0.3)]);
            break_it(&mut t);
            let e = t.validate().unwrap_err();
            assert!(e.contains(expect), "{e} (expected '{expect}')");
        }
    }

    #[test]
    fn a_table_for_other_sigmas_is_refused_even_with_the_same_step_count() {
        let t = table(&[(1.0, 0.9), (0.5, 0.3)]);
        let sig = [1.0, 0.6, 0.0];
        let req = Request {
            fingerprint: "f",
            resolution: Resolution {
                width: 64,
                height: 64,
            },
            sigmas: &sig,
            shift: 3.0,
            mu: None,
        };
        let e = t
            .levels(Path::new("t.json"), &req, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("steps[1].sigma is 0.5"), "{e}");
    }

    #[test]
    fn a_table_for_another_dynamic_shift_is_refused_naming_both() {
        let mut t = table(&[(1.0, 0.9), (0.5, 0.3)]);
        t.schedule.mu = Some(0.75);
        let sig = [1.0, 0.5, 0.0];
        let req = |mu| Request {
            fingerprint: "f",
            resolution: Resolution {
                width: 64,
                height: 64,
            },
            sigmas: &sig,
            shift: 3.0,
            mu,
        };
        let p = Path::new("t.json");
        assert!(t.levels(p, &req(Some(0.75)), false).is_ok());
        let e = t.levels(p, &req(Some(1.0)), true).unwrap_err().to_string();
        assert!(e.contains("mu 0.75") && e.contains("is 1"), "{e}");
        let e = t.levels(p, &req(None), true).unwrap_err().to_string();
        assert!(e.contains("a static shift"), "{e}");
    }
}
