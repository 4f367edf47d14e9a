//! When to try again.

use std::time::Duration;

use rand::Rng;

/// The retry schedule with jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before retry n (index 0 = the delay after the first attempt).
    pub schedule: Vec<Duration>,
    /// ± spread of each delay, in percent.
    pub jitter_percent: u8,
}

impl RetryPolicy {
    /// The delay after `n_attempts` failed attempts, or `None` when the schedule is exhausted and
    /// the delivery is dead.
    pub fn delay_after(&self, n_attempts: u32) -> Option<Duration> {
        let base = *self.schedule.get(usize::try_from(n_attempts).ok()?.checked_sub(1)?)?;
        if self.jitter_percent == 0 || base.is_zero() {
            return Some(base);
        }
        let spread = f64::from(self.jitter_percent) / 100.0;
        let factor = rand::rng().random_range((1.0 - spread)..=(1.0 + spread));
        Some(base.mul_f64(factor.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ends_in_dead_letter_and_jitter_stays_in_bounds() {
        let policy = RetryPolicy { schedule: vec![Duration::from_secs(10), Duration::from_secs(100)], jitter_percent: 20 };
        for _ in 0..100 {
            let first = policy.delay_after(1).unwrap();
            assert!(first >= Duration::from_secs(8) && first <= Duration::from_secs(12), "{first:?}");
        }
        assert!(policy.delay_after(2).is_some());
        assert_eq!(policy.delay_after(3), None);
        assert_eq!(policy.delay_after(0), None);
    }

    #[test]
    fn default_schedule_reaches_about_three_days() {
        let raw = crate::config::RawConfig::default();
        let settings = raw.resolve().unwrap();
        let total: Duration = settings.retry_schedule.iter().sum();
        assert!(total >= Duration::from_secs(60 * 60 * 60) && total <= Duration::from_secs(96 * 60 * 60), "{total:?}");
    }
}
