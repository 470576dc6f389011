//! Exponential backoff with jitter, and the one retry loop built on it, so replicas
//! that failed together do not retry together, and an outage never turns into a hot
//! loop.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, attempt: 0 }
    }

    /// The next delay, with "equal jitter": uniform in [ceiling/2, ceiling], the
    /// ceiling doubling per failure up to `max`. Half the delay is guaranteed (no hot
    /// loop), the other half spreads replicas apart.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.first.saturating_mul(1 << self.attempt.min(16)).min(self.max);
        self.attempt += 1;
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Runs `attempt` until it succeeds, sleeping [`next_delay`](Self::next_delay)
    /// between failures, or until `deadline` has passed: then the last error is
    /// returned. `on_failure` sees each error with the failure count and the delay
    /// before the next try (to log it, or mark something unhealthy).
    pub async fn retry<T, E, Fut>(
        &mut self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Fut,
        mut on_failure: impl FnMut(&E, u32, Duration),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let delay = self.next_delay();
                    if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                        return Err(e);
                    }
                    on_failure(&e, self.failures(), delay);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_success_or_deadline() {
        let mut calls = 0;
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let r: Result<u32, &str> = b
            .retry(
                None,
                || {
                    calls += 1;
                    let n = calls;
                    async move {
                        if n < 3 {
                            Err("no")
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_, _, _| {},
            )
            .await;
        assert_eq!(r, Ok(3));
        let mut failures = 0;
        let deadline = Instant::now() + Duration::from_millis(200);
        let r: Result<(), &str> = Backoff::new(Duration::from_millis(10), Duration::from_millis(40))
            .retry(Some(deadline), || async { Err("down") }, |_, _, _| failures += 1)
            .await;
        assert_eq!(r, Err("down"));
        assert!(Instant::now() <= deadline, "gave up before sleeping past the deadline");
        assert!(failures >= 3, "retried until the deadline: {failures}");
    }
}
