//! The calibration engine. For step i (true levels sigma_i -> sigma_{i+1}) and a candidate
//! conditioning level s, every sample is put at x_i = (1 - sigma_i) x0 + sigma_i eps and
//!   loss(s) = mean over samples and elements of (x_i + v(x_i, s) dt - x_{i+1})^2
//!           = dt^2 * mean (v(x_i, s) - (eps - x0))^2,      dt = sigma_{i+1} - sigma_i.
//! All candidates x samples of a stage go through the model as rows of as few batches as the
//! device allows (each row with its own level); squared errors are reduced on the GPU to one
//! number per row (candidate, sample), which is all that is read back. The same x0 and eps
//! serve every candidate and step (common random numbers).

use noiseshift_kernels::{Gpu, Tensor, ops};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result, input};
use crate::noiseshift::grid::Window;
use crate::noiseshift::table::Step;
use crate::tensor_file::HostTensor;

/// A velocity model as the search sees it: any family, or a closed form in tests.
pub trait VelocityModel {
    /// Velocity for latents x [R, C, h, w]; row r is conditioned at noise level `levels[r]`
    /// on the text of dataset sample `samples[r]`.
    fn velocity(&self, gpu: &Gpu, x: &Tensor, levels: &[f64], samples: &[usize]) -> Result<Tensor>;
}

/// The search's settings (defaults in NOISESHIFT.md).
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// N + 1 true sigmas.
    pub sigmas: Vec<f64>,
    pub coarse_window: f64,
    pub coarse_stride: f64,
    pub fine_window: f64,
    pub fine_stride: f64,
    /// Repeat the coarse stage further out while its winner sits on the window's edge.
    pub widen: bool,
    /// Rows per model evaluation.
    pub batch: usize,
    /// Bootstrap resamples for the standard error of sigma_hat.
    pub bootstrap: usize,
    pub seed: u64,
}

/// One calibrated step: its row of the calibration table and how the search got there.
#[derive(Clone, Debug)]
pub struct StepResult {
    pub step: Step,
    pub coarse_winner: f64,
    /// (candidate, loss) of each stage.
    pub coarse: Vec<(f64, f64)>,
    pub fine: Vec<(f64, f64)>,
    /// Rows (sample evaluations) the step cost.
    pub evaluations: usize,
}

/// Per-candidate losses of one stage: losses[c][s] for sample s.
struct Evaluated {
    levels: Vec<f64>,
    per_sample: Vec<Vec<f64>>,
}

impl Evaluated {
    fn mean(&self, c: usize) -> f64 {
        let l = &self.per_sample[c];
        l.iter().sum::<f64>() / l.len() as f64
    }

    fn pairs(&self) -> Vec<(f64, f64)> {
        (0..self.levels.len())
            .map(|c| (self.levels[c], self.mean(c)))
            .collect()
    }
}

/// The winner: smallest loss, then nearest `sigma`; only among levels <= upper.
fn pick(pairs: &[(f64, f64)], sigma: f64, upper: f64) -> (f64, f64) {
    pairs
        .iter()
        .copied()
        .filter(|&(s, _)| s <= upper + 1e-12)
        .min_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then((a.0 - sigma).abs().total_cmp(&(b.0 - sigma).abs()))
        })
        .expect("at least one candidate in range")
}

pub struct Engine<'a, M: VelocityModel> {
    gpu: &'a Gpu,
    model: &'a M,
    config: SearchConfig,
    x0: HostTensor,
    noise: HostTensor,
    /// eps - x0 on the device: the target velocity of every sample.
    target: Tensor,
}

impl<'a, M: VelocityModel> Engine<'a, M> {
    pub fn new(
        gpu: &'a Gpu,
        model: &'a M,
        x0: HostTensor,
        noise: HostTensor,
        config: SearchConfig,
    ) -> Result<Self> {
        if x0.shape != noise.shape || x0.shape.is_empty() || x0.shape[0] == 0 {
            return input(format!(
                "x0 {:?} and noise {:?} must be the same non-empty batch",
                x0.shape, noise.shape
            ));
        }
        if config.batch == 0 {
            return input("--batch must be at least 1");
        }
        let strides = [
            config.coarse_window,
            config.coarse_stride,
            config.fine_window,
            config.fine_stride,
        ];
        if strides.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return input(format!(
                "windows and strides must be positive, got {strides:?}"
            ));
        }
        let diff: Vec<f32> = noise
            .data
            .iter()
            .zip(&x0.data)
            .map(|(e, x)| e - x)
            .collect();
        let target = Tensor::from_f32(gpu, &x0.shape, &diff)?;
        Ok(Engine {
            gpu,
            model,
            config,
            x0,
            noise,
            target,
        })
    }

    pub fn samples(&self) -> usize {
        self.x0.shape[0]
    }

    pub fn steps(&self) -> usize {
        self.config.sigmas.len() - 1
    }

    /// Loss of every (level, sample) at step `i`; `done(rows)` after each model evaluation.
    fn evaluate(
        &self,
        xi: &Tensor,
        dt: f64,
        levels: &[f64],
        done: &mut dyn FnMut(usize),
    ) -> Result<Evaluated> {
        let s = self.samples();
        let per_elem = dt * dt / (self.x0.data.len() / s) as f64;
        let rows = levels.len() * s;
        let mut sums = Vec::with_capacity(rows);
        for start in (0..rows).step_by(self.config.batch) {
            let end = (start + self.config.batch).min(rows);
            let samples: Vec<usize> = (start..end).map(|r| r % s).collect();
            let row_levels: Vec<f64> = (start..end).map(|r| levels[r / s]).collect();
            let x = ops::layout::gather_batch(self.gpu, xi, &samples)?;
            let v = self.model.velocity(self.gpu, &x, &row_levels, &samples)?;
            let u = ops::layout::gather_batch(self.gpu, &self.target, &samples)?;
            let se = ops::reduce::squared_error_groups(self.gpu, &v, &u, 1)?;
            let got = se.to_vec(self.gpu)?;
            if let Some(k) = got.iter().position(|v| !v.is_finite()) {
                let r = start + k;
                return Err(Error::Input(format!(
                    "the loss of sample {} at level {} is not finite (NaN or Inf): check the model's \
                     weights (`inspect --check`) and the dataset's embeddings; a value past the f16 \
                     range is the other usual cause",
                    r % s,
                    levels[r / s]
                )));
            }
            sums.extend(got.into_iter().map(|v| f64::from(v) * per_elem));
            done(end - start);
        }
        let per_sample = sums.chunks(s).map(<[f64]>::to_vec).collect();
        Ok(Evaluated {
            levels: levels.to_vec(),
            per_sample,
        })
    }

    /// Bootstrap over samples: the spread of the fine stage's winner.
    fn stderr(&self, fine: &Evaluated, sigma: f64, upper: f64, step: usize) -> f64 {
        let s = self.samples();
        if s < 2 || self.config.bootstrap == 0 {
            return 0.0;
        }
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(self.config.seed ^ (0x9e37_79b9 * (step as u64 + 1)));
        let mut picks = Vec::with_capacity(self.config.bootstrap);
        for _ in 0..self.config.bootstrap {
            let draw: Vec<usize> = (0..s).map(|_| rng.random_range(0..s)).collect();
            let pairs: Vec<(f64, f64)> = (0..fine.levels.len())
                .map(|c| {
                    (
                        fine.levels[c],
                        draw.iter().map(|&j| fine.per_sample[c][j]).sum::<f64>(),
                    )
                })
                .collect();
            picks.push(pick(&pairs, sigma, upper).0);
        }
        let mean = picks.iter().sum::<f64>() / picks.len() as f64;
        (picks.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (picks.len() - 1) as f64).sqrt()
    }

    /// Calibrate step `i` with conditioning levels allowed in [0, upper].
    pub fn step(&self, i: usize, upper: f64, done: &mut dyn FnMut(usize)) -> Result<StepResult> {
        let c = &self.config;
        let (sigma, sigma_next) = (c.sigmas[i], c.sigmas[i + 1]);
        let dt = sigma_next - sigma;
        let xi_host: Vec<f32> = self
            .x0
            .data
            .iter()
            .zip(&self.noise.data)
            .map(|(x, e)| ((1.0 - sigma) * f64::from(*x) + sigma * f64::from(*e)) as f32)
            .collect();
        let xi = Tensor::from_f32(self.gpu, &self.x0.shape, &xi_host)?;

        // Coarse stage; sigma itself is always evaluated (for loss_nominal) even when out of range.
        let window = Window {
            center: sigma,
            half_width: c.coarse_window,
            stride: c.coarse_stride,
        };
        let mut levels = window.candidates(upper);
        // Grid values are rounded to 1e-9 (grid.rs), so sigma's own candidate may differ from it
        // by that much.
        let same = |l: f64| (l - sigma).abs() < 1e-9;
        let nominal_extra = !levels.iter().any(|&l| same(l));
        if nominal_extra {
            levels.push(sigma);
        }
        let coarse = self.evaluate(&xi, dt, &levels, done)?;
        let mut pairs = coarse.pairs();
        let loss_nominal = pairs.iter().find(|p| same(p.0)).expect("evaluated").1;
        if nominal_extra {
            pairs.pop();
        }
        let mut evaluations = levels.len() * self.samples();
        let mut rings = 1;
        let mut winner = pick(&pairs, sigma, upper);
        while c.widen && window.on_edge(winner.0, rings, upper) {
            let more = window.next_out(rings, winner.0, upper);
            if more.is_empty() {
                break;
            }
            let extra = self.evaluate(&xi, dt, &more, done)?;
            evaluations += more.len() * self.samples();
            pairs.extend(extra.pairs());
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            rings += 1;
            winner = pick(&pairs, sigma, upper);
        }
        let edge = window.on_edge(winner.0, rings, upper);

        // Fine stage around the coarse winner.
        let fine_window = Window {
            center: winner.0,
            half_width: c.fine_window,
            stride: c.fine_stride,
        };
        let fine_levels = fine_window.candidates(upper);
        let fine = self.evaluate(&xi, dt, &fine_levels, done)?;
        evaluations += fine_levels.len() * self.samples();
        let fine_pairs = fine.pairs();
        let (sigma_hat, loss_calibrated) = pick(&fine_pairs, sigma, upper);
        Ok(StepResult {
            step: Step {
                sigma,
                sigma_next,
                sigma_hat,
                loss_nominal,
                loss_calibrated,
                candidates: pairs.len() + fine_pairs.len(),
                sigma_hat_stderr: self.stderr(&fine, sigma, upper, i),
                edge,
            },
            coarse_winner: winner.0,
            coarse: pairs,
            fine: fine_pairs,
            evaluations,
        })
    }

    /// Rows one step costs at most (for progress totals).
    pub fn rows_per_step(&self) -> usize {
        let c = &self.config;
        let coarse = 2 * (c.coarse_window / c.coarse_stride + 1e-9).floor() as usize + 2;
        let fine = 2 * (c.fine_window / c.fine_stride + 1e-9).floor() as usize + 1;
        (coarse + fine) * self.samples()
    }
}
