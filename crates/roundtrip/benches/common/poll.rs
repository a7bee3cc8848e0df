//! The waits of the polling tools roundtrip's push is compared with.

use std::time::Duration;

/// How a polling test waits between two looks.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// A fixed interval: Awaitility and busypie (100 ms), aws-testing-library (500 ms).
    Every(Duration),
    /// The seed's poller: Fibonacci back-off in seconds (1 s, 1 s, 2 s, 3 s, …) with
    /// full jitter, as Python's `backoff.fibo` does by default.
    Fibonacci,
}

/// The waits of one polling loop, in order.
pub struct Waits {
    schedule: Schedule,
    fib: (u64, u64),
}

impl Waits {
    pub fn new(schedule: Schedule) -> Waits {
        Waits {
            schedule,
            fib: (1, 1),
        }
    }

    /// How long to wait before the next look.
    pub fn next_wait(&mut self) -> Duration {
        match self.schedule {
            Schedule::Every(every) => every,
            Schedule::Fibonacci => {
                let (a, b) = self.fib;
                self.fib = (b, a + b);
                Duration::from_millis(rand::random::<u64>() % (a * 1000 + 1))
            }
        }
    }
}
