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

/// diffusers' resolution-dependent shift (FLUX.1-dev's scheduler, `use_dynamic_shifting`):
/// mu grows linearly with the packed image token count, from `base_shift` at `base_seq_len`
/// tokens to `max_shift` at `max_seq_len` (FluxPipeline's calculate_shift).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DynamicShift {
    pub base_shift: f64,
    pub max_shift: f64,
    pub base_seq_len: f64,
    pub max_seq_len: f64,
}

impl DynamicShift {
    /// FLUX.1-dev's scheduler config.
    pub const FLUX: DynamicShift = DynamicShift {
        base_shift: 0.5,
        max_shift: 1.15,
        base_seq_len: 256.0,
        max_seq_len: 4096.0,
    };

    /// From a scheduler_config.json with `use_dynamic_shifting: true` (FLUX.1-dev's values for
    /// any it leaves out); `None` when it shifts statically.
    pub fn from_config(json: &serde_json::Value) -> Option<DynamicShift> {
        if json.get("use_dynamic_shifting").and_then(|v| v.as_bool()) != Some(true) {
            return None;
        }
        let f = DynamicShift::FLUX;
        let get = |k: &str, d: f64| json.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
        Some(DynamicShift {
            base_shift: get("base_shift", f.base_shift),
            max_shift: get("max_shift", f.max_shift),
            base_seq_len: get("base_image_seq_len", f.base_seq_len),
            max_seq_len: get("max_image_seq_len", f.max_seq_len),
        })
    }

    /// mu for an image of `width` x `height` pixels: (H/16)(W/16) packed tokens.
    pub fn mu(&self, width: usize, height: usize) -> f64 {
        let tokens = ((height / 16) * (width / 16)) as f64;
        let m = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len);
        tokens * m + self.base_shift - m * self.base_seq_len
    }
}

/// FluxPipeline's N + 1 sigmas: t = linspace(1, 1/N, N) (float64, stored as float32), then
/// diffusers' exponential time shift e^mu / (e^mu + 1/t - 1) when `mu` is given, else the
/// static shift, both in float32 as diffusers computes them; then 0.
pub fn flux_sigmas(steps: usize, mu: Option<f64>, shift: f64) -> Vec<f64> {
    let mut sigmas: Vec<f64> = (0..steps)
        .map(|i| {
            let end = 1.0 / steps as f64;
            let t = if steps == 1 {
                1.0
            } else {
                1.0 + (end - 1.0) * i as f64 / (steps - 1) as f64
            };
            let t = t as f32;
            let s = match mu {
                Some(mu) => {
                    let e = mu.exp() as f32;
                    e / (e + (1.0 / t - 1.0))
                }
                None => {
                    let s32 = shift as f32;
                    s32 * t / (1.0 + (s32 - 1.0) * t)
                }
            };
            f64::from(s)
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
