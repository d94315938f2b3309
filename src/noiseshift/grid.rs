//! Candidate grids: sigma + k * stride for integers k with |k * stride| <= window, clipped to
//! the allowed range [0, upper]; if nothing is left, the single candidate min(sigma, upper)
//! (the centre, clamped to [0, upper]).

/// Round to 1e-9 so that grids built from the same numbers compare equal.
pub fn tidy(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// A window of candidates around `center`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub center: f64,
    pub half_width: f64,
    pub stride: f64,
}

impl Window {
    /// Candidates with inner < |k * stride| <= outer (inner = -1 includes the centre), in
    /// increasing order, clipped to [0, upper].
    fn ring(&self, inner: f64, outer: f64, upper: f64) -> Vec<f64> {
        let kmax = (outer / self.stride + 1e-9).floor() as i64;
        (-kmax..=kmax)
            .filter(|&k| (k as f64 * self.stride).abs() > inner + 1e-12)
            .map(|k| tidy(self.center + k as f64 * self.stride))
            .filter(|&s| (-1e-12..=upper + 1e-12).contains(&s))
            .collect()
    }

    /// The window's candidates inside [0, upper], or the single fallback candidate.
    pub fn candidates(&self, upper: f64) -> Vec<f64> {
        let c = self.ring(-1.0, self.half_width, upper);
        if c.is_empty() {
            // Rounding must not lift the fallback above the bound (a resumed table's sigma_hat
            // carries more digits than the grid).
            vec![tidy(self.center.clamp(0.0, upper)).clamp(0.0, upper)]
        } else {
            c
        }
    }

    /// The candidates of the next window out, on the side of `toward` (below or above the
    /// centre): window*(n) < |k*stride| <= window*(n+1), clipped.
    pub fn next_out(&self, ring: usize, toward: f64, upper: f64) -> Vec<f64> {
        let inner = self.half_width * ring as f64;
        let outer = self.half_width * (ring + 1) as f64;
        self.ring(inner, outer, upper)
            .into_iter()
            .filter(|&s| (s - self.center).signum() == (toward - self.center).signum())
            .collect()
    }

    /// Whether `s` lies on the outermost candidates of the window (searched out to `rings`
    /// windows) with room for more candidates beyond it, inside [0, upper].
    pub fn on_edge(&self, s: f64, rings: usize, upper: f64) -> bool {
        let reach = self.half_width * rings as f64;
        let kmax = (reach / self.stride + 1e-9).floor();
        let edge = (s - self.center).abs() >= kmax * self.stride - 1e-9;
        let beyond = if s > self.center {
            s + self.stride
        } else {
            s - self.stride
        };
        let at_bound = beyond < -1e-9 || beyond > upper + 1e-9;
        edge && !at_bound && kmax > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_coarse_grid_has_21_candidates() {
        let w = Window {
            center: 0.5,
            half_width: 0.1,
            stride: 0.01,
        };
        let c = w.candidates(1.0);
        assert_eq!(c.len(), 21);
        assert_eq!(c[0], 0.4);
        assert_eq!(c[20], 0.6);
        assert!(c.windows(2).all(|p| p[0] < p[1]));
    }

    #[test]
    fn clipping_and_fallback() {
        let w = Window {
            center: 0.95,
            half_width: 0.1,
            stride: 0.01,
        };
        let c = w.candidates(0.97);
        assert_eq!(*c.last().unwrap(), 0.97);
        assert_eq!(c.len(), 13);
        let w = Window {
            center: 0.05,
            half_width: 0.1,
            stride: 0.01,
        };
        assert_eq!(w.candidates(1.0)[0], 0.0);
        // Nothing in range: the single candidate min(sigma, upper).
        let w = Window {
            center: 0.9,
            half_width: 0.01,
            stride: 0.001,
        };
        assert_eq!(w.candidates(0.5), vec![0.5]);
    }

    #[test]
    fn next_window_out_and_edges() {
        let w = Window {
            center: 0.5,
            half_width: 0.1,
            stride: 0.01,
        };
        let below = w.next_out(1, 0.4, 1.0);
        assert_eq!(below.len(), 10);
        assert_eq!(below[0], 0.3);
        assert_eq!(*below.last().unwrap(), 0.39);
        assert!(w.on_edge(0.4, 1, 1.0));
        assert!(!w.on_edge(0.45, 1, 1.0));
        assert!(w.on_edge(0.3, 2, 1.0));
        // The bound is not an edge, nor the last grid point before it.
        let w = Window {
            center: 0.95,
            half_width: 0.1,
            stride: 0.01,
        };
        assert!(!w.on_edge(1.0, 1, 1.0));
        let w = Window {
            center: 0.6683,
            half_width: 0.1,
            stride: 0.01,
        };
        assert!(!w.on_edge(0.7683, 1, 0.7719));
        assert!(w.on_edge(0.7683, 1, 0.7799));
    }

    #[test]
    fn the_fallback_never_rounds_above_a_bound_with_more_digits_than_the_grid() {
        // A resumed table's last sigma_hat: tidy() alone would round it up past itself.
        let upper = 0.123_456_789_6;
        let w = Window {
            center: 0.5,
            half_width: 0.1,
            stride: 0.01,
        };
        let c = w.candidates(upper);
        assert_eq!(c.len(), 1);
        assert!(c[0] <= upper, "{} > {upper}", c[0]);
    }
}
