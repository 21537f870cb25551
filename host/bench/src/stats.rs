//! Order statistics over measured durations.

use std::time::Duration;

/// Sorted samples, for percentiles.
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "a figure needs at least one sample");
        samples.sort_unstable();
        Self(samples)
    }

    /// The `p`-th percentile (0..=100), nearest-rank.
    pub fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }
}

/// Median of several rounds' figures: one noisy round on a busy machine does not decide.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Samples::new((1..=100).map(Duration::from_millis).collect());
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.percentile(100.0), Duration::from_millis(100));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
