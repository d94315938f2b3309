//! The adaptive search (`calibrate --search adaptive`): the grid's answer for a fraction of its
//! evaluations.
//!
//! Why not simply fewer samples: the images of a data set disagree about the best level, so
//! the argmin over a subsample of the loss's mean moves by several fine strides from the grid's
//! (the lattice point of least loss over all samples). Racing candidates on subsamples finds the
//! basin but not that point. What the grid wastes is everything away from the optimum: the loss
//! over all samples is a smooth curve in s, and the optimum moves little from step to step. So:
//!
//! 1. Start: from the second step on, sigma_i plus the earlier steps' offset sigma_hat - sigma,
//!    moved by its linear trend in sigma over the last two steps (`follow`), or the step's
//!    bound where the last answer sat on its own bound. The first step (or every step without
//!    `follow`) races instead: the grid's coarse window, at a wider `pilot_stride`, is scored
//!    on the first samples; a candidate whose paired mean loss difference to the current best
//!    exceeds z standard errors leaves the race (every candidate sees the same (x0, eps)
//!    pairs, so the differences vary far less than the losses), survivors get twice the
//!    samples per round, and the race stops once they lie within one pilot stride of each
//!    other or have a quarter of the samples. The start is the middle of
//!    the survivors. With `race_every_step` every step races, and a follow step starts from
//!    the race's basin instead of the trend where the survivors left the trend's
//!    neighbourhood (the optimum of a trained model can jump between local minima).
//! 2. A line search on all samples from sigma_i (scored anyway, for loss_nominal) and the
//!    start. Scoring a level on all samples also gives its velocities, so the search knows
//!    each sample's squared velocity difference to every other level it scored: with those,
//!    the loss of the velocity interpolated between the three scored levels nearest the best
//!    is exact at every s (interpolant.rs), convex through two levels. The next level is the
//!    fine-lattice point where that loss is least, within twice the levels' span of them; the
//!    search stops when that point is scored already, when it is a neighbour of the best
//!    whose interpolated loss is lower by at most `stop_gain` of the best's, or after
//!    `refinements` steps. Where the start is right, sigma_i and the start suffice (the secant
//!    through them puts its minimum on the start); else one or two levels more: two to four
//!    levels on all samples, where the grid scores 27-43.
//!
//! sigma_hat is the best level scored on all samples, on the grid's fine lattice sigma_i + k *
//! fine_stride, within the same bound u_i and the grid's reach (coarse + fine window around
//! sigma_i unless --widen), with the grid's tie rules; loss_nominal and loss_calibrated are
//! means over all samples, as the grid's are.

use super::interpolant::Interpolant;
use super::{Engine, Memo, StepResult, StepState, VelocityModel, bound, key, mean_over, pick};
use crate::error::Result;
use crate::noiseshift::grid::{Window, tidy};
use crate::noiseshift::table::{Adaptive, Step};

/// The levels the search may return: the grid's reach around sigma (its fine window around a
/// coarse winner at most one coarse window away; unbounded with --widen), inside [0, upper].
#[derive(Clone, Copy, Debug)]
struct Range {
    lo: f64,
    hi: f64,
}

impl Range {
    fn contains(&self, level: f64) -> bool {
        (self.lo - 1e-12..=self.hi + 1e-12).contains(&level)
    }

    /// The point of the lattice sigma + k * stride nearest `x`, inside the range where one is.
    fn on_lattice(&self, sigma: f64, stride: f64, x: f64) -> f64 {
        let k = ((x.clamp(self.lo, self.hi) - sigma) / stride).round();
        let mut p = tidy(sigma + k * stride);
        if p > self.hi + 1e-12 {
            p = tidy(p - stride);
        }
        if p < self.lo - 1e-12 {
            p = tidy(p + stride);
        }
        p.clamp(self.lo, self.hi)
    }

    /// The points of the lattice sigma + k * stride in [from, to] and the range.
    fn lattice(&self, sigma: f64, stride: f64, from: f64, to: f64) -> Vec<f64> {
        let k0 = ((from.max(self.lo) - sigma) / stride - 1e-9).ceil() as i64;
        let k1 = ((to.min(self.hi) - sigma) / stride + 1e-9).floor() as i64;
        (k0..=k1)
            .map(|k| tidy(sigma + k as f64 * stride))
            .filter(|&p| self.contains(p))
            .collect()
    }

    /// The levels of `levels` inside the range.
    fn within(&self, levels: &[f64]) -> Vec<f64> {
        levels
            .iter()
            .copied()
            .filter(|&l| self.contains(l))
            .collect()
    }
}

/// Whether `level` is worse than `best` by more than z standard errors of the paired
/// differences over the first `n` samples.
fn clearly_worse(memo: &Memo, level: f64, best: f64, n: usize, z: f64) -> bool {
    if n < 2 {
        return false;
    }
    let (a, b) = (&memo.losses(level)[..n], &memo.losses(best)[..n]);
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    mean > z * (var / n as f64).sqrt()
}

/// The (up to) `n` levels of `levels` nearest `best`, sorted.
fn nearest(levels: &[f64], best: f64, n: usize) -> Vec<f64> {
    let mut by: Vec<f64> = levels.to_vec();
    by.sort_by(|a, b| (a - best).abs().total_cmp(&(b - best).abs()));
    by.truncate(n);
    by.sort_by(f64::total_cmp);
    by
}

/// The interpolant through `levels`: scored on all samples, so every pair of them has its
/// distances (`evaluate_full`).
fn interpolant(memo: &Memo, levels: &[f64], draw: Option<&[usize]>) -> Interpolant {
    let losses = levels
        .iter()
        .map(|&l| mean_over(memo.losses(l), draw))
        .collect();
    Interpolant::new(levels, losses, |j, k| {
        mean_over(memo.distances(levels[j], levels[k]), draw)
    })
}

/// The last of the earlier answers where it sat on its own bound (the answer before it, 1
/// for the first step).
fn pinned(earlier: &[f64]) -> Option<f64> {
    let (&last, before) = earlier.split_last()?;
    (key(last) == key(bound(before))).then_some(last)
}

/// Where the pilot race puts the optimum.
struct Pilot {
    levels: Vec<f64>,
    /// Samples the survivors were scored on.
    samples: usize,
    winner: f64,
    /// The lowest and highest survivor.
    survivors: (f64, f64),
}

impl<M: VelocityModel> Engine<'_, M> {
    pub(super) fn adaptive(
        &self,
        i: usize,
        upper: f64,
        earlier: &[f64],
        a: &Adaptive,
        st: &mut StepState<'_, '_>,
    ) -> Result<StepResult> {
        let c = &self.config;
        let (sigma, sigma_next) = (c.sigmas[i], c.sigmas[i + 1]);
        let fs = c.fine_stride;
        let all = self.samples();
        // The grid cannot answer beyond its windows; searching the same range keeps the two
        // comparable, and `edge` says when the optimum may lie further out.
        let reach = if c.widen {
            f64::INFINITY
        } else {
            c.coarse_window + c.fine_window
        };
        let hi = upper.min(sigma + reach);
        let range = Range {
            lo: (sigma - reach).max(0.0).min((hi - c.fine_window).max(0.0)),
            hi,
        };

        // 1. Where to start: the earlier steps' offsets sigma_hat - sigma extrapolated, else
        // the pilot race's survivors: their middle.
        let trend = if a.follow && i > 0 {
            self.trend(i, earlier)
        } else {
            None
        };
        let pilot = match trend {
            Some(_) if !a.race_every_step => None,
            _ => Some(self.pilot(st, sigma, upper, a)?),
        };
        let start = match &pilot {
            Some(p) => {
                let (lo, hi) = p.survivors;
                let near = |t: f64| t >= lo - a.pilot_stride && t <= hi + a.pilot_stride;
                match trend {
                    // The trend where the race kept its neighbourhood, else the race's basin.
                    Some(t) if near(t) => t,
                    _ => 0.5 * (lo + hi),
                }
            }
            // No race means a trend.
            None => trend.unwrap_or(sigma),
        };
        // Always in the range, so the search below has a candidate.
        let start = range.on_lattice(sigma, fs, start);
        let mut full = vec![sigma];
        if key(start) != key(sigma) {
            full.push(start);
        }
        self.evaluate_full(st, &full.clone(), &[])?;

        // 2. The line search on all samples (module comment).
        for _ in 0..=a.refinements {
            let best = pick(&st.memo.pairs(&range.within(&full), Some(all)), sigma, hi).0;
            let scored = |l: f64| full.iter().any(|&f| key(f) == key(l));
            let next = if full.len() == 1 {
                // The start was sigma_i: one fine stride toward the wider side of the range.
                let toward = if best - range.lo > range.hi - best {
                    -fs
                } else {
                    fs
                };
                range.on_lattice(sigma, fs, best + toward)
            } else {
                let near = nearest(&full, best, 3);
                let f = interpolant(st.memo, &near, None);
                // Extrapolating at most twice the levels' span beyond them.
                let (first, last) = (near[0], near[near.len() - 1]);
                let reach = 2.0 * (last - first);
                let points = range.lattice(sigma, fs, first - reach, last + reach);
                match f.argmin(points, best) {
                    // A neighbour of the best that promises almost nothing is not worth a
                    // level on all samples.
                    Some(p) if (p - best).abs() <= fs + 1e-9 => {
                        let at_best = st.memo.mean(best, Some(all));
                        if at_best - f.loss(p) <= a.stop_gain * at_best {
                            break;
                        }
                        p
                    }
                    Some(p) => p,
                    None => break,
                }
            };
            if scored(next) {
                break;
            }
            self.evaluate_full(st, &[next], &full.clone())?;
            full.push(next);
        }
        let (sigma_hat, loss_calibrated) =
            pick(&st.memo.pairs(&range.within(&full), Some(all)), sigma, hi);
        // The grid's edge test on the coarse point nearest sigma_hat (the grid's coarse winner
        // there): the optimum may lie further out.
        let coarse = Window {
            center: sigma,
            half_width: c.coarse_window,
            stride: c.coarse_stride,
        };
        let k = ((sigma_hat - sigma).clamp(-c.coarse_window, c.coarse_window) / c.coarse_stride)
            .round();
        let edge = !c.widen && coarse.on_edge(tidy(sigma + k * c.coarse_stride), 1, upper);
        let stderr = self.argmin_stderr(st.memo, &full, sigma_hat, &range, i);
        let (scouted, scouted_n, winner) = match &pilot {
            Some(p) => (p.levels.clone(), p.samples, p.winner),
            None => (Vec::new(), 0, start),
        };
        Ok(StepResult {
            step: Step {
                sigma,
                sigma_next,
                sigma_hat,
                loss_nominal: st.memo.mean(sigma, Some(all)),
                loss_calibrated,
                candidates: scouted.len() + full.len(),
                sigma_hat_stderr: stderr,
                edge,
            },
            coarse_winner: winner,
            coarse: st.memo.pairs(&scouted, Some(scouted_n)),
            fine: st.memo.pairs(&full, Some(all)),
            evaluations: st.memo.rows(),
        })
    }

    /// Where step i's optimum should lie from the steps before: the offset sigma_hat - sigma
    /// of the last, moved by its linear trend in sigma over the last two; or this step's
    /// bound where the last answer sat on its own bound (it wanted a higher level, and the
    /// offset says nothing of how much higher).
    fn trend(&self, i: usize, earlier: &[f64]) -> Option<f64> {
        if let Some(upper) = pinned(earlier) {
            return Some(upper);
        }
        let s = &self.config.sigmas;
        let offset = |back: usize| {
            Some(earlier.get(earlier.len().checked_sub(back)?)? - s[i.checked_sub(back)?])
        };
        let last = offset(1)?;
        let slope = offset(2).map_or(0.0, |before| (last - before) / (s[i - 1] - s[i - 2]));
        let t = s[i] + last + slope * (s[i] - s[i - 1]);
        t.is_finite().then_some(t)
    }

    /// The pilot race over the coarse window (the first step; every step without `follow` or
    /// with `race_every_step`): it picks the basin.
    fn pilot(
        &self,
        st: &mut StepState<'_, '_>,
        sigma: f64,
        upper: f64,
        a: &Adaptive,
    ) -> Result<Pilot> {
        let all = self.samples();
        let levels = Window {
            center: sigma,
            half_width: self.config.coarse_window,
            stride: a.pilot_stride,
        }
        .candidates(upper);
        let mut alive = levels.clone();
        let mut n = a.first_samples.min(all);
        let cap = (all / 4).max(n);
        self.evaluate(st, &alive, n)?;
        loop {
            let best = pick(&st.memo.pairs(&alive, Some(n)), sigma, upper).0;
            alive.retain(|&l| l == best || !clearly_worse(st.memo, l, best, n, a.z));
            let span = alive[alive.len() - 1] - alive[0];
            if span <= a.pilot_stride + 1e-9 || n >= cap {
                break;
            }
            n = (2 * n).min(cap);
            self.evaluate(st, &alive, n)?;
        }
        let (winner, _) = pick(&st.memo.pairs(&alive, Some(n)), sigma, upper);
        Ok(Pilot {
            levels,
            samples: n,
            winner,
            survivors: (alive[0], alive[alive.len() - 1]),
        })
    }

    /// Bootstrap over all samples of the interpolant's argmin through the three scored levels
    /// nearest sigma_hat, between them: how far sigma_hat would move with other images.
    fn argmin_stderr(
        &self,
        memo: &Memo,
        full: &[f64],
        sigma_hat: f64,
        range: &Range,
        step: usize,
    ) -> f64 {
        let near = nearest(full, sigma_hat, 3);
        if near.len() < 2 {
            return 0.0;
        }
        let c = &self.config;
        let points = range.lattice(c.sigmas[step], c.fine_stride, near[0], near[near.len() - 1]);
        self.bootstrap(self.samples(), step, |draw| {
            interpolant(memo, &near, Some(draw))
                .argmin(points.iter().copied(), sigma_hat)
                .unwrap_or(sigma_hat)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_points_stay_in_range() {
        let range = |lo, hi| Range { lo, hi };
        assert_eq!(range(0.0, 1.0).on_lattice(0.503, 0.01, 0.5481), 0.553);
        // Rounding past the bound or below the range steps back inside.
        assert_eq!(range(0.0, 0.55).on_lattice(0.503, 0.01, 0.5481), 0.543);
        assert_eq!(range(0.0, 1.0).on_lattice(0.0089, 0.01, 0.0), 0.0089);
        assert_eq!(range(0.39, 0.6).on_lattice(0.503, 0.01, 0.3), 0.393);
        assert_eq!(nearest(&[0.1, 0.5, 0.2, 0.9], 0.15, 3), [0.1, 0.2, 0.5]);
        assert_eq!(nearest(&[0.5, 0.1], 0.15, 3), [0.1, 0.5]);
        // Lattice points between two levels, cut to the range, the ends included.
        assert_eq!(
            range(0.0, 0.525).lattice(0.503, 0.01, 0.483, 0.6),
            [0.483, 0.493, 0.503, 0.513, 0.523]
        );
        assert_eq!(
            range(0.49, 0.6).lattice(0.503, 0.01, 0.3, 0.51),
            [0.493, 0.503]
        );
    }

    #[test]
    fn an_answer_on_its_bound_pins_the_next_start() {
        assert_eq!(pinned(&[]), None);
        assert_eq!(pinned(&[1.0]), Some(1.0));
        assert_eq!(pinned(&[0.97]), None);
        assert_eq!(pinned(&[0.97, 0.97]), Some(0.97));
        assert_eq!(pinned(&[0.97, 0.95]), None);
    }
}
