//! Seeded starting noise. Row r of a batch is drawn from seed + r alone, so row r of a
//! batch-N run equals a batch-1 run with seed + r (and images can be reproduced one at a time).

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::tensor_file::HostTensor;

/// Standard Gaussian values of `shape` ([B, ...]): row r from `seed + r`.
pub fn seeded_noise(seed: u64, shape: &[usize]) -> HostTensor {
    let rows = shape.first().copied().unwrap_or(1);
    let per_row: usize = shape.iter().skip(1).product();
    let mut data = Vec::with_capacity(rows * per_row);
    for r in 0..rows {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(r as u64));
        data.extend((0..per_row).map(|_| -> f32 { StandardNormal.sample(&mut rng) }));
    }
    HostTensor::new(shape.to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::seeded_noise;

    #[test]
    fn row_r_of_a_batch_is_the_batch_one_draw_of_seed_plus_r() {
        let batch = seeded_noise(5, &[3, 2, 4]);
        for r in 0..3 {
            let one = seeded_noise(5 + r as u64, &[1, 2, 4]);
            assert_eq!(batch.data[r * 8..(r + 1) * 8], one.data[..]);
        }
        assert_ne!(batch.data[..8], batch.data[8..16]);
    }
}
