//! Exponential backoff with jitter for reconnects and actor restarts.

use std::time::Duration;

/// Doubles from `base` up to `max`, with ±25 % jitter; `reset` after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let d = exp.min(self.max);
        let jitter = rand::random_range(0.75..1.25);
        d.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_millis(1250));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
