//! The calibration engine. For step i (true levels sigma_i -> sigma_{i+1}) and a candidate
//! conditioning level s, every sample is put at x_i = (1 - sigma_i) x0 + sigma_i eps and
//!   loss(s) = mean over samples and elements of (x_i + v(x_i, s) dt - x_{i+1})^2
//!           = dt^2 * mean (v(x_i, s) - (eps - x0))^2,      dt = sigma_{i+1} - sigma_i.
//! All candidates x samples of a stage go through the model as rows of as few batches as the
//! device allows (each row with its own level); squared errors are reduced on the GPU to one
//! number per row (candidate, sample), which is all that is read back. The same x0 and eps
//! serve every candidate and step (common random numbers).
//!
//! Two searches share this engine: the exhaustive grid of NOISESHIFT.md (here) and the
//! adaptive race (race.rs). Both only ever evaluate sample prefixes 0..n of a level, and every
//! evaluated row is kept in a `Memo` that the caller may save: a resumed run replays the step
//! from it, since each search is a pure function of those numbers. The adaptive search also
//! keeps, on the host, the velocities of the levels it scores on all samples, for the squared
//! velocity differences between them (its interpolant, interpolant.rs); the memo saves the
//! differences, and a resumed step runs again the velocities it still needs.

mod interpolant;
mod race;

use std::collections::{BTreeMap, BTreeSet};

use noiseshift_kernels::{Gpu, Tensor, ops};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result, input};
use crate::models::stream::size;
use crate::noiseshift::grid::Window;
use crate::noiseshift::table::{Adaptive, Partial, PartialDistance, PartialLevel, Step};
use crate::tensor_file::HostTensor;

/// Host memory the adaptive search may fill with velocities (Engine::new checks its worst case).
const KEPT_VELOCITIES_LIMIT: u64 = 8 << 30;

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
    /// Repeat the coarse stage further out while its winner sits on the window's edge (grid).
    pub widen: bool,
    /// The adaptive search's settings; None runs the exhaustive grid.
    pub adaptive: Option<Adaptive>,
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
    /// (candidate, mean loss over the samples it was scored on) of each stage.
    pub coarse: Vec<(f64, f64)>,
    pub fine: Vec<(f64, f64)>,
    /// Rows (candidate x sample evaluations) the step's search needed, resumed rows included.
    pub evaluations: usize,
}

/// The bound u_i on step i's levels from the answers before it: the last, 1 for the first step.
fn bound(earlier: &[f64]) -> f64 {
    earlier.last().copied().unwrap_or(1.0)
}

/// Memo keys: levels rounded to 1e-9, as the grids round them.
fn key(level: f64) -> i64 {
    (level * 1e9).round() as i64
}

/// Per-sample numbers of the step in progress: level -> losses of samples 0..len, and for
/// pairs of levels scored on all samples by the adaptive search, each sample's mean squared
/// velocity difference |v_a - v_b|^2 (in the losses' units).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memo {
    rows: BTreeMap<i64, (f64, Vec<f64>)>,
    distances: BTreeMap<(i64, i64), Vec<f64>>,
    /// Rows run again after a resume, for velocities the saved numbers do not hold.
    recomputed: usize,
}

/// A pair's memo key, the lower level first.
fn pair(a: f64, b: f64) -> (i64, i64) {
    let (a, b) = (key(a), key(b));
    (a.min(b), a.max(b))
}

impl Memo {
    /// A saved step in progress (`Partial` of the table).
    pub fn from_partial(partial: &Partial) -> Memo {
        let rows = partial
            .levels
            .iter()
            .map(|l| (key(l.level), (l.level, l.losses.clone())))
            .collect();
        let distances = partial
            .distances
            .iter()
            .map(|d| (pair(d.a, d.b), d.values.clone()))
            .collect();
        Memo {
            rows,
            distances,
            recomputed: partial.recomputed,
        }
    }

    /// The step in progress as the table saves it.
    pub fn partial(&self, step: usize) -> Partial {
        // Every pair's levels are scored, so they are in `rows`.
        let level = |k: i64| self.rows[&k].0;
        Partial {
            step,
            levels: self
                .rows
                .values()
                .map(|(level, losses)| PartialLevel {
                    level: *level,
                    losses: losses.clone(),
                })
                .collect(),
            distances: self
                .distances
                .iter()
                .map(|(&(a, b), values)| PartialDistance {
                    a: level(a),
                    b: level(b),
                    values: values.clone(),
                })
                .collect(),
            recomputed: self.recomputed,
        }
    }

    /// Rows evaluated (recomputed ones included).
    pub fn rows(&self) -> usize {
        self.rows.values().map(|(_, l)| l.len()).sum::<usize>() + self.recomputed
    }

    fn losses(&self, level: f64) -> &[f64] {
        self.rows.get(&key(level)).map_or(&[], |(_, l)| l)
    }

    /// Per-sample |v_a - v_b|^2, empty where not computed.
    fn distances(&self, a: f64, b: f64) -> &[f64] {
        self.distances.get(&pair(a, b)).map_or(&[], |d| d)
    }

    /// Mean loss of `level` over its first `n` samples (all it has when `n` is None).
    fn mean(&self, level: f64, n: Option<usize>) -> f64 {
        let l = self.losses(level);
        mean_over(&l[..n.unwrap_or(l.len()).min(l.len())], None)
    }

    fn pairs(&self, levels: &[f64], n: Option<usize>) -> Vec<(f64, f64)> {
        levels.iter().map(|&l| (l, self.mean(l, n))).collect()
    }
}

/// Mean of per-sample `values` over all of them, or over a bootstrap draw of their indices
/// (0 for none).
fn mean_over(values: &[f64], draw: Option<&[usize]>) -> f64 {
    match draw {
        Some(d) => d.iter().map(|&j| values[j]).sum::<f64>() / d.len().max(1) as f64,
        None => values.iter().sum::<f64>() / values.len().max(1) as f64,
    }
}

/// Called after each model evaluation with the rows it ran and the memo as it now stands
/// (progress, and saving the step in progress).
pub type OnRows<'a> = dyn FnMut(usize, &Memo) -> Result<()> + 'a;

/// The step being searched: its forward samples and the losses so far.
struct StepState<'m, 'c> {
    xi: Tensor,
    /// dt^2 / elements per sample: turns a row's sum of squares into its x-space loss.
    per_elem: f64,
    memo: &'m mut Memo,
    on_rows: &'m mut OnRows<'c>,
    /// Velocities of the levels the adaptive search scores on all samples (host, per sample):
    /// what their distances are computed from. Not saved: a resumed step recomputes them.
    velocities: BTreeMap<i64, Vec<Option<Vec<f32>>>>,
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
        if let Some(a) = &config.adaptive {
            if !(a.pilot_stride.is_finite() && a.pilot_stride > 0.0 && a.z.is_finite() && a.z > 0.0)
            {
                return input(format!(
                    "the pilot stride and z must be positive, got {} and {}",
                    a.pilot_stride, a.z
                ));
            }
            if !(a.stop_gain.is_finite() && a.stop_gain >= 0.0) {
                return input(format!(
                    "the stop gain must be zero or positive, got {}",
                    a.stop_gain
                ));
            }
            if a.first_samples == 0 {
                return input("the race's first samples must be at least 1");
            }
            // The interpolant's velocities stay on the host: at most every level the line
            // search scores on all samples (sigma, the start, one per refinement).
            let levels = a.refinements as u64 + 3;
            let kept = levels * x0.data.len() as u64 * 4;
            if kept > KEPT_VELOCITIES_LIMIT {
                return input(format!(
                    "the adaptive search would keep up to {} of velocities in host memory \
                     ({levels} levels x {} samples, more than {}): use fewer --samples or \
                     --refinements, or --search grid",
                    size(kept),
                    x0.shape[0],
                    size(KEPT_VELOCITIES_LIMIT)
                ));
            }
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

    /// Make sure every level has losses for samples 0..upto, running only the missing rows.
    fn evaluate(&self, st: &mut StepState<'_, '_>, levels: &[f64], upto: usize) -> Result<()> {
        let todo: Vec<(f64, usize)> = levels
            .iter()
            .flat_map(|&l| (st.memo.losses(l).len()..upto).map(move |s| (l, s)))
            .collect();
        self.run(st, &todo, false)
    }

    /// Score `levels` on all samples, and each sample's |v_a - v_b|^2 for every pair of them
    /// and of them with `full` (levels scored so before). The velocities this needs are kept
    /// from the forwards that score the levels; after a resume, the saved levels' are run again.
    fn evaluate_full(
        &self,
        st: &mut StepState<'_, '_>,
        levels: &[f64],
        full: &[f64],
    ) -> Result<()> {
        let all = self.samples();
        // Pairs without distances, each with its two levels.
        let mut missing = BTreeMap::new();
        for (j, &a) in levels.iter().enumerate() {
            for &b in full.iter().chain(&levels[..j]) {
                if key(a) != key(b) && st.memo.distances(a, b).is_empty() {
                    missing.insert(pair(a, b), (a, b));
                }
            }
        }
        let mut rows: Vec<(f64, usize)> = Vec::new();
        let mut added = BTreeSet::new();
        let mut add = |l: f64, rows: &mut Vec<(f64, usize)>| {
            if !added.insert(key(l)) {
                return;
            }
            let kept = st.velocities.get(&key(l));
            let scored = st.memo.losses(l).len();
            rows.extend(
                (0..all)
                    .filter(|&s| s >= scored || kept.is_none_or(|v| v[s].is_none()))
                    .map(|s| (l, s)),
            );
        };
        for &l in levels {
            add(l, &mut rows);
        }
        for &(a, b) in missing.values() {
            add(a, &mut rows);
            add(b, &mut rows);
        }
        // Loss rows in sample order first, as the memo appends them.
        rows.sort_by_key(|&(l, s)| (s < st.memo.losses(l).len(), key(l), s));
        self.run(st, &rows, true)?;
        for (k, (a, b)) in missing {
            let (va, vb) = (&st.velocities[&key(a)], &st.velocities[&key(b)]);
            let d = va
                .iter()
                .zip(vb)
                .map(|(x, y)| {
                    let (x, y) = (x.as_ref().expect("kept"), y.as_ref().expect("kept"));
                    let sum: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p - q).powi(2)).sum();
                    sum * st.per_elem
                })
                .collect();
            st.memo.distances.insert(k, d);
        }
        (st.on_rows)(0, st.memo)
    }

    /// Run the model on (level, sample) rows; a row's loss is appended to the memo where it
    /// is the level's next sample (else it was run again: counted as recomputed), and with
    /// `keep` its velocity is kept.
    fn run(&self, st: &mut StepState<'_, '_>, todo: &[(f64, usize)], keep: bool) -> Result<()> {
        let all = self.samples();
        for rows in todo.chunks(self.config.batch) {
            let samples: Vec<usize> = rows.iter().map(|r| r.1).collect();
            let row_levels: Vec<f64> = rows.iter().map(|r| r.0).collect();
            let x = ops::layout::gather_batch(self.gpu, &st.xi, &samples)?;
            let v = self.model.velocity(self.gpu, &x, &row_levels, &samples)?;
            let u = ops::layout::gather_batch(self.gpu, &self.target, &samples)?;
            let se = ops::reduce::squared_error_groups(self.gpu, &v, &u, 1)?;
            let got = se.to_vec(self.gpu)?;
            if let Some(k) = got.iter().position(|v| !v.is_finite()) {
                return Err(Error::Input(format!(
                    "the loss of sample {} at level {} is not finite (NaN or Inf): check the model's \
                     weights (`inspect --check`) and the dataset's embeddings; a value past the f16 \
                     range is the other usual cause",
                    rows[k].1, rows[k].0
                )));
            }
            if keep {
                let host = v.to_vec(self.gpu)?;
                let per = host.len() / rows.len();
                for (r, &(level, s)) in rows.iter().enumerate() {
                    let kept = st
                        .velocities
                        .entry(key(level))
                        .or_insert_with(|| vec![None; all]);
                    kept[s] = Some(host[r * per..(r + 1) * per].to_vec());
                }
            }
            for (&(level, s), loss) in rows.iter().zip(got) {
                let entry = st
                    .memo
                    .rows
                    .entry(key(level))
                    .or_insert((level, Vec::new()));
                if entry.1.len() == s {
                    entry.1.push(f64::from(loss) * st.per_elem);
                } else {
                    st.memo.recomputed += 1;
                }
            }
            (st.on_rows)(rows.len(), st.memo)?;
        }
        Ok(())
    }

    /// The standard deviation of `stat` over bootstrap resamples of samples 0..n (seeded per
    /// step); `stat` gets each resample's sample indices.
    fn bootstrap(&self, n: usize, step: usize, mut stat: impl FnMut(&[usize]) -> f64) -> f64 {
        if n < 2 || self.config.bootstrap == 0 {
            return 0.0;
        }
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(self.config.seed ^ (0x9e37_79b9 * (step as u64 + 1)));
        let picks: Vec<f64> = (0..self.config.bootstrap)
            .map(|_| {
                let draw: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
                stat(&draw)
            })
            .collect();
        let mean = picks.iter().sum::<f64>() / picks.len() as f64;
        (picks.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (picks.len() - 1) as f64).sqrt()
    }

    /// Bootstrap over the first `n` samples: the spread of the winner among `levels`.
    fn stderr(
        &self,
        memo: &Memo,
        levels: &[f64],
        n: usize,
        sigma: f64,
        upper: f64,
        step: usize,
    ) -> f64 {
        self.bootstrap(n, step, |draw| {
            let pairs: Vec<(f64, f64)> = levels
                .iter()
                .map(|&l| (l, mean_over(memo.losses(l), Some(draw))))
                .collect();
            pick(&pairs, sigma, upper).0
        })
    }

    /// Calibrate step `i`. `earlier` holds sigma_hat of the steps just before it (any number,
    /// the last being step i - 1's): the last bounds the conditioning levels to [0, it] (1
    /// when empty), and the adaptive search starts from their trend. `memo` holds the rows of
    /// this step already evaluated (empty, or what an interrupted run saved); `on_rows` is
    /// told of each model evaluation.
    pub fn step(
        &self,
        i: usize,
        earlier: &[f64],
        memo: &mut Memo,
        on_rows: &mut OnRows<'_>,
    ) -> Result<StepResult> {
        let upper = bound(earlier);
        let sigma = self.config.sigmas[i];
        let dt = self.config.sigmas[i + 1] - sigma;
        let xi_host: Vec<f32> = self
            .x0
            .data
            .iter()
            .zip(&self.noise.data)
            .map(|(x, e)| ((1.0 - sigma) * f64::from(*x) + sigma * f64::from(*e)) as f32)
            .collect();
        let mut st = StepState {
            xi: Tensor::from_f32(self.gpu, &self.x0.shape, &xi_host)?,
            per_elem: dt * dt / (self.x0.data.len() / self.samples()) as f64,
            memo,
            on_rows,
            velocities: BTreeMap::new(),
        };
        match &self.config.adaptive {
            Some(a) => self.adaptive(i, upper, earlier, a, &mut st),
            None => self.grid(i, upper, &mut st),
        }
    }

    /// The exhaustive coarse-to-fine grid of NOISESHIFT.md, every candidate on every sample.
    fn grid(&self, i: usize, upper: f64, st: &mut StepState<'_, '_>) -> Result<StepResult> {
        let c = &self.config;
        let (sigma, sigma_next) = (c.sigmas[i], c.sigmas[i + 1]);
        let all = self.samples();
        // Coarse stage; sigma itself is always evaluated (for loss_nominal) even when out of range.
        let window = Window {
            center: sigma,
            half_width: c.coarse_window,
            stride: c.coarse_stride,
        };
        let mut levels = window.candidates(upper);
        self.evaluate(st, &levels, all)?;
        self.evaluate(st, &[sigma], all)?;
        let loss_nominal = st.memo.mean(sigma, Some(all));
        let mut rings = 1;
        let mut winner = pick(&st.memo.pairs(&levels, Some(all)), sigma, upper);
        while c.widen && window.on_edge(winner.0, rings, upper) {
            let more = window.next_out(rings, winner.0, upper);
            if more.is_empty() {
                break;
            }
            self.evaluate(st, &more, all)?;
            levels.extend(more);
            levels.sort_by(f64::total_cmp);
            rings += 1;
            winner = pick(&st.memo.pairs(&levels, Some(all)), sigma, upper);
        }
        let edge = window.on_edge(winner.0, rings, upper);

        // Fine stage around the coarse winner.
        let fine_levels = Window {
            center: winner.0,
            half_width: c.fine_window,
            stride: c.fine_stride,
        }
        .candidates(upper);
        self.evaluate(st, &fine_levels, all)?;
        let fine = st.memo.pairs(&fine_levels, Some(all));
        let (sigma_hat, loss_calibrated) = pick(&fine, sigma, upper);
        let coarse = st.memo.pairs(&levels, Some(all));
        Ok(StepResult {
            step: Step {
                sigma,
                sigma_next,
                sigma_hat,
                loss_nominal,
                loss_calibrated,
                candidates: coarse.len() + fine.len(),
                sigma_hat_stderr: self.stderr(st.memo, &fine_levels, all, sigma, upper, i),
                edge,
            },
            coarse_winner: winner.0,
            coarse,
            fine,
            evaluations: st.memo.rows(),
        })
    }

    /// Rows one step costs at most with the grid (for progress totals and comparisons).
    pub fn grid_rows_per_step(&self) -> usize {
        let c = &self.config;
        let coarse = 2 * (c.coarse_window / c.coarse_stride + 1e-9).floor() as usize + 2;
        let fine = 2 * (c.fine_window / c.fine_stride + 1e-9).floor() as usize + 1;
        (coarse + fine) * self.samples()
    }

    /// Rows one step is expected to cost (progress totals; the adaptive search's is a guess:
    /// two to four levels on all samples, more where it races).
    pub fn rows_per_step(&self) -> usize {
        match &self.config.adaptive {
            Some(_) => 3 * self.samples(),
            None => self.grid_rows_per_step(),
        }
    }
}
