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
//!    start: where the best scored level has a scored neighbour on each side (a bracket), the
//!    vertex of the parabola through the three scored levels nearest the best, kept inside the
//!    bracket (through the bracket where those are not convex); else through the three nearest,
//!    extrapolating at most twice their span; where they are not convex, a jump away from
//!    the nearest scored level (one fine stride after a trend start, a quarter of the
//!    survivors' span after a race; doubling each time). Each step scores the fine-lattice
//!    point nearest its target; the search stops when that point is scored already, or after
//!    `refinements` steps. Typically sigma_i, the start and one neighbour suffice: three levels
//!    on all samples, where the grid scores 33-43.
//!
//! sigma_hat is the best level scored on all samples, on the grid's fine lattice sigma_i + k *
//! fine_stride, within the same bound u_i and the grid's reach (coarse + fine window around
//! sigma_i unless --widen), with the grid's tie rules; loss_nominal and loss_calibrated are
//! means over all samples, as the grid's are.

use super::{Engine, Memo, StepResult, StepState, VelocityModel, bound, key, pick};
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

    /// The levels of `levels` inside the range.
    fn within(&self, levels: &[f64]) -> Vec<f64> {
        levels
            .iter()
            .copied()
            .filter(|&l| self.contains(l))
            .collect()
    }
}

/// The vertex of the parabola through three points, None when they are not convex.
fn vertex3(p: [(f64, f64); 3]) -> Option<f64> {
    let [(x0, y0), (x1, y1), (x2, y2)] = p;
    // Divided differences: y = y0 + d01 (x - x0) + d012 (x - x0)(x - x1).
    let d01 = (y1 - y0) / (x1 - x0);
    let d12 = (y2 - y1) / (x2 - x1);
    let d012 = (d12 - d01) / (x2 - x0);
    let v = 0.5 * (x0 + x1) - d01 / (2.0 * d012);
    (d012 > 0.0 && v.is_finite()).then_some(v)
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

/// The three levels of `levels` nearest `best`, sorted.
fn nearest3(levels: &[f64], best: f64) -> Option<[f64; 3]> {
    let mut by: Vec<f64> = levels.to_vec();
    by.sort_by(|a, b| (a - best).abs().total_cmp(&(b - best).abs()));
    let mut three: [f64; 3] = by.get(..3)?.try_into().ok()?;
    three.sort_by(f64::total_cmp);
    Some(three)
}

/// The levels a parabola goes through: the best and its nearest scored neighbour on each side
/// (a bracket: the vertex lies between them), else the three nearest the best.
fn parabola3(levels: &[f64], best: f64) -> Option<([f64; 3], bool)> {
    let below = levels
        .iter()
        .copied()
        .filter(|&l| l < best)
        .max_by(f64::total_cmp);
    let above = levels
        .iter()
        .copied()
        .filter(|&l| l > best)
        .min_by(f64::total_cmp);
    match (below, above) {
        (Some(b), Some(a)) => Some(([b, best, a], true)),
        _ => nearest3(levels, best).map(|p| (p, false)),
    }
}

/// Where the line search goes next from the scored `levels` (their losses by `mean`), None
/// where no parabola through them is convex.
fn line_target(levels: &[f64], best: f64, mean: impl Fn(f64) -> f64) -> Option<f64> {
    // Extrapolating at most twice as far as the three points reach.
    let vertex_of = |p: [f64; 3]| {
        let reach = 2.0 * (p[2] - p[0]);
        vertex3(p.map(|l| (l, mean(l)))).map(|v| v.clamp(best - reach, best + reach))
    };
    let (p, bracketed) = parabola3(levels, best)?;
    if !bracketed {
        return vertex_of(p);
    }
    // A far bracket end (sigma_i, usually) makes its parabola the mean curvature over a long
    // span, so its steps toward the optimum come out short; the three nearest levels see the
    // curvature where the optimum is. Kept inside the bracket.
    match nearest3(levels, best).and_then(vertex_of) {
        Some(v) => Some(v.clamp(p[0], p[2])),
        None => vertex3(p.map(|l| (l, mean(l)))),
    }
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
        // the pilot race's survivors: their middle, with a first jump a quarter of their span.
        let trend = if a.follow && i > 0 {
            self.trend(i, earlier)
        } else {
            None
        };
        let pilot = match trend {
            Some(_) if !a.race_every_step => None,
            _ => Some(self.pilot(st, sigma, upper, a)?),
        };
        let (start, mut jump) = match &pilot {
            Some(p) => {
                let (lo, hi) = p.survivors;
                let near = |t: f64| t >= lo - a.pilot_stride && t <= hi + a.pilot_stride;
                match trend {
                    // The trend where the race kept its neighbourhood, else the race's basin.
                    Some(t) if near(t) => (t, fs),
                    _ => (0.5 * (lo + hi), (0.25 * (hi - lo)).max(fs)),
                }
            }
            // No race means a trend.
            None => (trend.unwrap_or(sigma), fs),
        };
        // Always in the range, so the search below has a candidate.
        let start = range.on_lattice(sigma, fs, start);
        let mut full = vec![sigma];
        self.evaluate(st, &[sigma, start], all)?;
        if key(start) != key(sigma) {
            full.push(start);
        }

        // 2. The line search on all samples (module comment).
        for _ in 0..=a.refinements {
            let best = pick(&st.memo.pairs(&range.within(&full), Some(all)), sigma, hi).0;
            let mean = |l| st.memo.mean(l, Some(all));
            let scored = |l: f64| full.iter().any(|&f| key(f) == key(l));
            let vertex = line_target(&full, best, mean);
            let next = match vertex {
                Some(v) => range.on_lattice(sigma, fs, v),
                None => {
                    // Away from the nearest scored level (toward the inside at the range's
                    // ends), or the other way where that lattice point is scored already.
                    let nearest = full
                        .iter()
                        .copied()
                        .filter(|&l| key(l) != key(best))
                        .min_by(|x, y| (x - best).abs().total_cmp(&(y - best).abs()));
                    let down = nearest.map_or(best - range.lo > range.hi - best, |n| n > best);
                    let [first, second] = if down { [-jump, jump] } else { [jump, -jump] };
                    jump *= 2.0;
                    let there = range.on_lattice(sigma, fs, best + first);
                    if scored(there) {
                        range.on_lattice(sigma, fs, best + second)
                    } else {
                        there
                    }
                }
            };
            if scored(next) {
                break;
            }
            self.evaluate(st, &[next], all)?;
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
        let stderr = self.vertex_stderr(st.memo, &full, sigma_hat, upper, i);
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

    /// Bootstrap over all samples of the parabola vertex through the three scored levels
    /// nearest sigma_hat: how far sigma_hat would move with other images.
    fn vertex_stderr(
        &self,
        memo: &Memo,
        full: &[f64],
        sigma_hat: f64,
        upper: f64,
        step: usize,
    ) -> f64 {
        let all = self.samples();
        let Some(three) = nearest3(full, sigma_hat) else {
            return 0.0;
        };
        self.bootstrap(all, step, |draw| {
            let p = three.map(|l| {
                let losses = memo.losses(l);
                (l, draw.iter().map(|&j| losses[j]).sum::<f64>() / all as f64)
            });
            let v = vertex3(p).unwrap_or(sigma_hat).clamp(0.0, upper);
            v.clamp(three[0], three[2])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parabola_vertex_and_convexity() {
        let f = |s: f64| 3.0 * (s - 0.414).powi(2) + 1.0;
        let v = vertex3([(0.40, f(0.40)), (0.41, f(0.41)), (0.45, f(0.45))]).unwrap();
        assert!((v - 0.414).abs() < 1e-9, "{v}");
        assert_eq!(vertex3([(0.4, 1.0), (0.5, 2.0), (0.6, 1.0)]), None);
        assert_eq!(vertex3([(0.4, 1.0), (0.5, 1.0), (0.6, 1.0)]), None);
    }

    #[test]
    fn lattice_points_stay_in_range() {
        let range = |lo, hi| Range { lo, hi };
        assert_eq!(range(0.0, 1.0).on_lattice(0.503, 0.01, 0.5481), 0.553);
        // Rounding past the bound or below the range steps back inside.
        assert_eq!(range(0.0, 0.55).on_lattice(0.503, 0.01, 0.5481), 0.543);
        assert_eq!(range(0.0, 1.0).on_lattice(0.0089, 0.01, 0.0), 0.0089);
        assert_eq!(range(0.39, 0.6).on_lattice(0.503, 0.01, 0.3), 0.393);
        assert_eq!(nearest3(&[0.1, 0.5, 0.2, 0.9], 0.15), Some([0.1, 0.2, 0.5]));
        assert_eq!(nearest3(&[0.1, 0.5], 0.15), None);
    }

    #[test]
    fn the_parabola_brackets_the_best_where_it_can() {
        // Nearest neighbours on both sides, however far, rather than the three nearest.
        let levels = [0.30, 0.50, 0.51, 0.52, 0.90];
        assert_eq!(parabola3(&levels, 0.51), Some(([0.50, 0.51, 0.52], true)));
        assert_eq!(parabola3(&levels, 0.30), Some(([0.30, 0.50, 0.51], false)));
        assert_eq!(
            parabola3(&[0.3, 0.9, 0.5], 0.5),
            Some(([0.3, 0.5, 0.9], true))
        );
        assert_eq!(parabola3(&[0.3, 0.5], 0.5), None);
    }

    #[test]
    fn the_line_search_takes_the_local_curvature_inside_a_bracket() {
        // Steep far from the optimum, flat near it: the bracket through the far level 0.0
        // stops short (0.058), the three nearest levels land on 0.056.
        let f = |s: f64| (s - 0.056).powi(2) + 50.0 * (0.03 - s).max(0.0).powi(3);
        let levels = [0.0, 0.063, 0.067, 0.068];
        let bracket = vertex3([0.0, 0.063, 0.067].map(|l| (l, f(l)))).unwrap();
        assert!(bracket > 0.058, "{bracket}");
        let v = line_target(&levels, 0.063, f).unwrap();
        assert!((v - 0.056).abs() < 1e-9, "{v}");
        // Never past the bracket: the nearest three (0.063-0.065) put their vertex at 0.0435,
        // their reach limit at 0.059, the bracket's far end at 0.0605.
        let bumpy = |s: f64| match key(s) {
            k if k == key(0.0605) => 1.0,
            k if k == key(0.063) => 0.10,
            k if k == key(0.064) => 0.11,
            _ => 0.1205,
        };
        let v = line_target(&[0.0605, 0.063, 0.064, 0.065], 0.063, bumpy).unwrap();
        assert_eq!(v, 0.0605);
        assert_eq!(line_target(&[0.0, 0.063], 0.063, f), None);
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
