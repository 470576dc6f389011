//! Telemetry every service shares: logs (`RUST_LOG` picks the level, `LOG_FORMAT`
//! text for people or JSON for log pipelines), the operator endpoint, the
//! processor's counters and progress line, and liveness.

use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod endpoint;
mod stats;

pub use endpoint::{ready_within, store_and_queue_ready, Probe};
pub use stats::{report, Snapshot, Stats};

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// When a service's loops last showed they are turning, for `/healthz`.
#[derive(Debug)]
pub struct Liveness(std::sync::Mutex<std::time::Instant>);

impl Liveness {
    /// Loops silent this long count as stuck.
    pub const STALL: Duration = Duration::from_secs(30);

    pub fn beat(&self) {
        *self.0.lock().expect("liveness lock") = std::time::Instant::now();
    }

    pub fn since_last_beat(&self) -> Duration {
        self.0.lock().expect("liveness lock").elapsed()
    }

    /// Ok while the last beat is recent; otherwise says how long `what` has been silent.
    pub fn check(&self, what: &str) -> Result<(), String> {
        let quiet = self.since_last_beat();
        if quiet < Self::STALL {
            Ok(())
        } else {
            Err(format!("{what} silent for {}s", quiet.as_secs()))
        }
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness(std::sync::Mutex::new(std::time::Instant::now()))
    }
}
