//! Flow-matching sigma schedules, computed exactly as diffusers' FlowMatchEulerDiscreteScheduler
//! does (including where it rounds to float32), so our samplers walk the same levels.

/// Default SD3 shift when the model folder has no scheduler config.
pub const DEFAULT_SHIFT: f64 = 3.0;

/// The most steps a schedule may have: far past any useful sampler, well inside every buffer.
pub const MAX_STEPS: usize = 1000;

/// sigma' = s sigma / (1 + (s - 1) sigma).
pub fn shift_sigma(sigma: f64, shift: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// N + 1 sigmas from 1 down to 0 for `steps` steps at `shift` (SD3/SD3.5).
///
/// diffusers builds its training sigmas in float32 (so sigma_min = the shifted 1/1000, in f32),
/// then takes linspace(1000, 1000 sigma_min, N) / 1000 in float64, shifts again in float64 and
/// stores the result as float32; we mirror each rounding.
pub fn sd3_sigmas(steps: usize, shift: f64) -> Vec<f64> {
    let s32 = shift as f32;
    let t_min = 1.0f32 / 1000.0;
    let sigma_min = f64::from(s32 * t_min / (1.0 + (s32 - 1.0) * t_min));
    let (hi, lo) = (1000.0, 1000.0 * sigma_min);
    let mut sigmas: Vec<f64> = (0..steps)
        .map(|i| {
            let t = if steps == 1 {
                hi
            } else {
                hi + (lo - hi) * i as f64 / (steps - 1) as f64
            };
            f64::from(shift_sigma(t / 1000.0, shift) as f32)
        })
        .collect();
    sigmas.push(0.0);
    sigmas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_monotone() {
        for (n, s) in [(1, 3.0), (5, 3.0), (28, 3.0), (50, 1.0)] {
            let sig = sd3_sigmas(n, s);
            assert_eq!(sig.len(), n + 1);
            assert_eq!(sig[0], 1.0);
            assert_eq!(sig[n], 0.0);
            assert!(sig.windows(2).all(|w| w[0] > w[1]), "{sig:?}");
        }
    }
}
