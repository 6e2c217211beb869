//! Configurable latency and error injection for the demo services.

use std::time::Duration;

use rand::Rng;

/// Latency and error rate of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Mean added latency; each request waits between 50% and 150% of it.
    pub latency: Duration,
    /// Probability (0.0–1.0) that a request fails with an injected error.
    pub error_rate: f64,
}

/// An error the fault injector decided to produce.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("injected failure (error rate {rate_percent}%)")]
pub struct InjectedFailure {
    /// The configured error rate, in percent, for the message.
    pub rate_percent: u32,
}

impl Faults {
    /// Faults with the given mean latency in milliseconds and error rate.
    pub fn new(latency_ms: u64, error_rate: f64) -> Self {
        Faults {
            latency: Duration::from_millis(latency_ms),
            error_rate: error_rate.clamp(0.0, 1.0),
        }
    }

    /// Waits the (jittered) latency, then fails with probability `error_rate`.
    pub async fn apply(&self) -> Result<(), InjectedFailure> {
        let (delay, fail) = {
            let mut rng = rand::rng();
            let factor: f64 = rng.random_range(0.5..1.5);
            (
                self.latency.mul_f64(factor),
                self.error_rate > 0.0 && rng.random_bool(self.error_rate),
            )
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if fail {
            return Err(InjectedFailure {
                rate_percent: (self.error_rate * 100.0).round() as u32,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zero_faults_never_fail_and_full_rate_always_fails() {
        let none = Faults::default();
        for _ in 0..50 {
            assert!(none.apply().await.is_ok());
        }
        let always = Faults::new(0, 1.0);
        assert_eq!(
            always.apply().await,
            Err(InjectedFailure { rate_percent: 100 })
        );
        assert_eq!(Faults::new(0, 7.0).error_rate, 1.0);
    }
}
