//! The loss of the velocity interpolated between scored levels, exactly, from what scoring
//! them gives: how the adaptive line search picks its next level.
//!
//! A level's loss is a mean over samples of |r_j|^2 (scaled), r_j = v(x_i, s_j) - (eps - x0).
//! For Lagrange weights w_j(s) through the levels (they sum to 1), the interpolated velocity
//! sum_j w_j v_j has residual sum_j w_j r_j, and since 2 r_j.r_k = |r_j|^2 + |r_k|^2 - |r_j - r_k|^2,
//!
//!   loss(s) = sum_j w_j L_j - sum_{j<k} w_j w_k D_jk,   D_jk the same mean of |v_j - v_k|^2.
//!
//! Through two levels this is a parabola that is never concave (a secant, Gauss-Newton step in
//! velocity space), where a parabola through mean losses needs three levels and convexity.

use std::cmp::Ordering;

/// The interpolated loss through levels with their mean losses and mean squared velocity
/// differences.
pub(super) struct Interpolant {
    levels: Vec<f64>,
    losses: Vec<f64>,
    /// distances[j][k] = D_jk, symmetric, zero on the diagonal.
    distances: Vec<Vec<f64>>,
}

impl Interpolant {
    /// `distance(j, k)` is D between levels j and k (asked for j < k only).
    pub fn new(levels: &[f64], losses: Vec<f64>, distance: impl Fn(usize, usize) -> f64) -> Self {
        let n = levels.len();
        let distances = (0..n)
            .map(|j| {
                (0..n)
                    .map(|k| match j.cmp(&k) {
                        Ordering::Less => distance(j, k),
                        Ordering::Greater => distance(k, j),
                        Ordering::Equal => 0.0,
                    })
                    .collect()
            })
            .collect();
        Interpolant {
            levels: levels.to_vec(),
            losses,
            distances,
        }
    }

    fn weights(&self, s: f64) -> Vec<f64> {
        let l = &self.levels;
        (0..l.len())
            .map(|j| {
                (0..l.len())
                    .filter(|&k| k != j)
                    .map(|k| (s - l[k]) / (l[j] - l[k]))
                    .product()
            })
            .collect()
    }

    /// The loss of the interpolated velocity at level `s`.
    pub fn loss(&self, s: f64) -> f64 {
        let w = self.weights(s);
        let mut loss: f64 = w.iter().zip(&self.losses).map(|(w, l)| w * l).sum();
        for j in 0..w.len() {
            for k in j + 1..w.len() {
                loss -= w[j] * w[k] * self.distances[j][k];
            }
        }
        loss
    }

    /// The point of `points` with the least interpolated loss, ties to the one nearest `near`.
    pub fn argmin(&self, points: impl IntoIterator<Item = f64>, near: f64) -> Option<f64> {
        points
            .into_iter()
            .map(|p| (p, self.loss(p)))
            .min_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then((a.0 - near).abs().total_cmp(&(b.0 - near).abs()))
            })
            .map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Velocities of `samples` samples at three levels and their target, at random.
    fn random(samples: usize, len: usize, seed: u64) -> (Vec<Vec<Vec<f64>>>, Vec<Vec<f64>>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut vec = |n| {
            (0..n)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect::<Vec<f64>>()
        };
        let v = (0..3)
            .map(|_| (0..samples).map(|_| vec(len)).collect())
            .collect();
        let target = (0..samples).map(|_| vec(len)).collect();
        (v, target)
    }

    fn mean_sq(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64
    }

    #[test]
    fn equals_the_loss_of_the_interpolated_velocity() {
        let (samples, len) = (5, 37);
        let (v, target) = random(samples, len, 3);
        let levels = [0.31, 0.347, 0.402];
        let over_samples = |f: &dyn Fn(usize) -> f64| (0..samples).map(f).sum::<f64>() / 5.0;
        let losses = (0..3)
            .map(|j| over_samples(&|s| mean_sq(&v[j][s], &target[s])))
            .collect();
        let f = Interpolant::new(&levels, losses, |j, k| {
            over_samples(&|s| mean_sq(&v[j][s], &v[k][s]))
        });
        // Inside, between and beyond the levels.
        for s in [0.2, 0.31, 0.33, 0.36, 0.402, 0.45] {
            let w = f.weights(s);
            let explicit = over_samples(&|n| {
                let vs: Vec<f64> = (0..len)
                    .map(|e| (0..3).map(|j| w[j] * v[j][n][e]).sum())
                    .collect();
                mean_sq(&vs, &target[n])
            });
            let got = f.loss(s);
            assert!(
                (got - explicit).abs() <= 1e-12 * explicit,
                "{s}: {got} vs {explicit}"
            );
        }
    }

    #[test]
    fn two_levels_give_the_secant_minimum() {
        // v(s) = s * a - target along one line: the residual vanishes at s = 0.6 exactly, and
        // two levels find it, however far they are from it.
        let a = [1.0, -2.0, 0.5];
        let target: Vec<f64> = a.iter().map(|x| 0.6 * x).collect();
        let v = |s: f64| a.map(|x| s * x);
        let (l0, l1) = (0.1, 0.2);
        let f = Interpolant::new(
            &[l0, l1],
            vec![mean_sq(&v(l0), &target), mean_sq(&v(l1), &target)],
            |_, _| mean_sq(&v(l0), &v(l1)),
        );
        let points = (0..=100).map(|k| k as f64 * 0.01);
        let best = f.argmin(points, l1).unwrap();
        assert!((best - 0.6).abs() < 1e-9, "{best}");
        assert!(f.loss(0.6).abs() < 1e-15);
        // Ties go to the point nearest `near`.
        let flat = Interpolant::new(&[0.1, 0.2], vec![1.0, 1.0], |_, _| 0.0);
        assert_eq!(flat.argmin([0.1, 0.3, 0.19], 0.2), Some(0.19));
    }
}
