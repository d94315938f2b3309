//! The adaptive search (`calibrate --search adaptive`): the grid's answer for a fraction of its
//! evaluations.
//!
//! Why not simply fewer samples: the images of a data set disagree about the best level, so
//! the grid's answer (the lattice point of least loss over all samples) moves by several fine
//! strides when samples are left out (see sigma_hat_stderr). Matching it needs the loss over all
//! samples near the optimum; what can be saved is everything else. So:
//!
//! 1. Pilot race: the grid's coarse window, at a wider `pilot_stride`, is scored on the first
//!    samples; a candidate whose paired mean loss difference to the current best exceeds z
//!    standard errors leaves the race (every candidate sees the same (x0, eps) pairs, so the
//!    differences vary far less than the losses), survivors get twice the samples per round, and
//!    the race stops once the survivors lie within one pilot stride of each other or have a
//!    quarter of the samples. It picks the basin (the loss can have two).
//! 2. Full-sample refinement: the loss is smooth in s, so a parabola locates its minimum. The
//!    nominal level sigma_i (needed for loss_nominal anyway) and the pilot's predicted minimum
//!    are scored on all samples; then, up to `refinements` times, the parabola through the three
//!    scored points nearest the best (or, with two, their slope and the pilot's curvature)
//!    predicts the minimum, and its nearest fine-lattice point is scored on all samples, until
//!    that point has been scored already.
//!
//! sigma_hat is the best level scored on all samples, on the grid's fine lattice sigma_i + k *
//! fine_stride, within the same bound u_i and the grid's reach (coarse + fine window around
//! sigma_i unless --widen), with the grid's tie rules; loss_nominal and
//! loss_calibrated are means over all samples, as the grid's are.

use super::{Engine, Memo, StepResult, StepState, VelocityModel, key, pick};
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

impl<M: VelocityModel> Engine<'_, M> {
    pub(super) fn adaptive(
        &self,
        i: usize,
        upper: f64,
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

        // 1. The pilot race over the coarse window.
        let pilot_levels = Window {
            center: sigma,
            half_width: c.coarse_window,
            stride: a.pilot_stride,
        }
        .candidates(upper);
        let mut alive = pilot_levels.clone();
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
        let pilot_n = n;
        let (winner, _) = pick(&st.memo.pairs(&alive, Some(n)), sigma, upper);
        // The pilot's parabola around its winner (neighbours at the samples all three have).
        let w = pilot_levels
            .iter()
            .position(|&l| l == winner)
            .expect("winner");
        let around = match (w.checked_sub(1), pilot_levels.get(w + 1)) {
            (Some(lo), Some(&hi)) => {
                let (lo, hi) = (pilot_levels[lo], hi);
                let m = [lo, winner, hi]
                    .iter()
                    .map(|&l| st.memo.losses(l).len())
                    .min()
                    .unwrap_or(0);
                let mean = |l| st.memo.mean(l, Some(m));
                Some([(lo, mean(lo)), (winner, mean(winner)), (hi, mean(hi))])
            }
            _ => None,
        };
        let predicted = around.and_then(vertex3).map_or(winner, |v| {
            v.clamp(winner - a.pilot_stride, winner + a.pilot_stride)
        });
        // Curvature (second derivative) of the pilot's mean loss, for a two-point step.
        let curvature = around.map(|[(x0, y0), (x1, y1), (x2, y2)]| {
            2.0 * ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)
        });

        // 2. Refinement on all samples.
        let mut full = vec![sigma];
        self.evaluate(st, &[sigma], all)?;
        let mut next = range.on_lattice(sigma, fs, predicted);
        for _ in 0..=a.refinements {
            if full.iter().any(|&l| key(l) == key(next)) {
                break;
            }
            self.evaluate(st, &[next], all)?;
            full.push(next);
            let in_range = range.within(&full);
            let best = pick(&st.memo.pairs(&in_range, Some(all)), sigma, hi).0;
            let mean = |l| st.memo.mean(l, Some(all));
            let guess = match nearest3(&full, best) {
                Some(p) => vertex3(p.map(|l| (l, mean(l)))),
                None => {
                    // Two points: their slope and the pilot's curvature.
                    let (x0, x1) = (full[0], full[1]);
                    let slope = (mean(x1) - mean(x0)) / (x1 - x0);
                    curvature
                        .filter(|k| *k > 0.0)
                        .map(|k| 0.5 * (x0 + x1) - slope / k)
                }
            };
            // No convex fit: one fine stride from the best, away from the side already scored.
            let guess = guess.unwrap_or_else(|| {
                let lower = full
                    .iter()
                    .any(|&l| l < best && l > best - 0.5 * a.pilot_stride);
                best + if lower { fs } else { -fs }
            });
            // Steps stay within one pilot stride of the best point.
            let guess = guess.clamp(best - a.pilot_stride, best + a.pilot_stride);
            next = range.on_lattice(sigma, fs, guess);
        }
        // Downhill on the fine lattice until both neighbours of the best are worse: a local
        // minimum of the loss over all samples, as the grid's answer is.
        for _ in 0..=a.refinements {
            let in_range = range.within(&full);
            if in_range.is_empty() {
                break;
            }
            let best = pick(&st.memo.pairs(&in_range, Some(all)), sigma, hi).0;
            let fresh: Vec<f64> = [best - fs, best + fs]
                .into_iter()
                .map(tidy)
                .filter(|&l| range.contains(l))
                .map(|l| l.max(0.0))
                .filter(|&l| !full.iter().any(|&f| key(f) == key(l)))
                .collect();
            if fresh.is_empty() {
                break;
            }
            self.evaluate(st, &fresh, all)?;
            full.extend(fresh);
        }
        let in_range = range.within(&full);
        let (sigma_hat, loss_calibrated) = if in_range.is_empty() {
            // Only sigma, above the bound, was scored: the top of the range.
            self.evaluate(st, &[hi], all)?;
            (hi, st.memo.mean(hi, Some(all)))
        } else {
            pick(&st.memo.pairs(&in_range, Some(all)), sigma, hi)
        };
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
        Ok(StepResult {
            step: Step {
                sigma,
                sigma_next,
                sigma_hat,
                loss_nominal: st.memo.mean(sigma, Some(all)),
                loss_calibrated,
                candidates: pilot_levels.len() + full.len(),
                sigma_hat_stderr: stderr,
                edge,
            },
            coarse_winner: winner,
            coarse: st.memo.pairs(&pilot_levels, Some(pilot_n)),
            fine: st.memo.pairs(&full, Some(all)),
            evaluations: st.memo.rows(),
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
}
