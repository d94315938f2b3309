//! Value parsers for numeric flags: a number outside its range is refused where it is parsed
//! (clap's usage error, exit code 2) with the range in the message, before any work or memory
//! depends on it. The ranges are generous bounds against nonsense, not tuning advice.

use std::ops::RangeInclusive;

/// Most sampling or calibration steps a run may ask for (also the most a table may list).
pub const STEPS: RangeInclusive<usize> = 1..=crate::schedule::MAX_STEPS;
/// Image sides in pixels: far above any model's position grid, far below sizes that overflow.
pub const SIDE: RangeInclusive<usize> = 16..=16384;
/// Rows sampled in one `generate` run.
pub const BATCH: RangeInclusive<usize> = 1..=1024;

/// A whole number in `range`.
pub fn count(range: RangeInclusive<usize>) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| {
        let v: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number"))?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "{v} is outside {}..={}",
                range.start(),
                range.end()
            ))
        }
    }
}

/// A finite number in [lo, hi].
pub fn real(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number"))?;
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is outside [{lo}, {hi}]"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_and_non_finite_values_are_refused_with_the_range() {
        let steps = count(STEPS);
        assert_eq!(steps("20"), Ok(20));
        assert!(steps("0").unwrap_err().contains("1..="));
        assert!(
            steps("18446744073709551615")
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            steps("99999999999999999999")
                .unwrap_err()
                .contains("whole number")
        );
        let g = real(0.0, 100.0);
        assert_eq!(g("4.5"), Ok(4.5));
        for bad in ["nan", "inf", "-inf", "1e308", "-1", "x"] {
            assert!(g(bad).is_err(), "{bad}");
        }
    }
}
