//! The reconnect backoff every networked driver uses.

use std::time::Duration;

/// Exponential reconnect backoff: 100 ms doubling to 5 s, with ±25 % jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        base.mul_f64(jitter)
    }

    /// Back to the first step after a successful reconnect.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_millis(6250));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
