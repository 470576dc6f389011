//! Delivery: the sender, which hands every stored event to every consumer subscribed
//! to it, at least once and in log order per consumer.
//!
//! - [`log`]: the commit-safe order over `message` and the reads that never skip.
//! - [`consumer`]: consumers (client, endpoint, secret, subscriptions, start, state)
//!   and what operators do to them.
//! - [`signature`]: Standard Webhooks signing and verification.
//! - [`webhook`]: one signed `POST` and its outcome; where endpoints may point.
//! - [`sender`]: leases (one sender per consumer at a time) and the lifecycle.
//! - [`worker`]: one consumer's loop: read after the cursor, post within a window,
//!   retry on the schedule, park, commit the cursor fenced by the lease.
//! - [`probe`]: `/healthz`, `/readyz` and the sender's gauges.
//! - [`ceiling`]: the benchmark's raw HTTP ceiling.
//!
//! It reads the store's `message` table and writes only its own tables (`consumer`
//! cursors and leases, `delivery_attempt`, `parked_delivery`); it never touches SQS.

use std::time::Duration;

pub mod ceiling;
pub mod consumer;
pub mod log;
pub mod probe;
pub mod sender;
pub mod signature;
pub mod webhook;
mod worker;

pub use consumer::{ConsumerEntry, Subscribed};
pub use log::{Position, Start};
pub use sender::Sender;

/// How the sender runs; `cmd/sender` fills it from flags and environment, with
/// [`Settings::default`] as the one source of the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This sender's name in leases (unique per running process).
    pub instance: String,
    /// How long a lease lasts without renewal; a dead sender's consumers are taken
    /// over after it. Renewed every third of it.
    pub lease: Duration,
    /// Most consumers one sender serves (the rest are left to other replicas).
    pub max_consumers: i64,
    /// Events read per query.
    pub batch_size: i64,
    /// How long a consumer with nothing to deliver waits before reading again.
    pub poll_interval: Duration,
    /// Longest the cursor goes uncommitted while deliveries succeed: what a crash
    /// may deliver twice.
    pub commit_interval: Duration,
    /// Delays before each retry of a failed attempt (the first attempt is at once);
    /// when they run out the event is parked. Each delay gets ±20 % jitter.
    pub schedule: Vec<Duration>,
    /// A consumer whose every attempt failed for this long is disabled.
    pub disable_after: Duration,
    /// Longest a `Retry-After` is honoured.
    pub max_retry_after: Duration,
    /// Seconds to finish requests in flight on SIGTERM.
    pub shutdown_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: default_instance(),
            lease: Duration::from_secs(30),
            max_consumers: 1000,
            batch_size: 500,
            poll_interval: Duration::from_millis(200),
            commit_interval: Duration::from_millis(250),
            // As Svix's: seconds, then minutes, then hours (about 28 h in all).
            schedule: parse_schedule("5s,5m,30m,2h,5h,10h,10h").expect("the default schedule parses"),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            max_retry_after: Duration::from_secs(3600),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// `hostname-pid-random`: tells replicas apart in leases and logs.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let host = if host.is_empty() { "sender".to_owned() } else { host };
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// A retry schedule such as `5s,5m,30m,2h` (`ms`, `s`, `m`, `h`); empty for no retries.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            crate::config::parse_duration(d).map_err(|_| format!("expected delays such as 5s,5m,30m,2h, got '{d}'"))
        })
        .collect()
}

/// The `webhook-id` of an event for its consumers: the same on every attempt and
/// replay, so consumers can deduplicate; derived from the event's key, never
/// quoting it (event ids may hold characters headers cannot).
pub fn webhook_id(client_id: &str, event_id: &str) -> String {
    let mut input = Vec::with_capacity(client_id.len() + event_id.len() + 1);
    input.extend_from_slice(client_id.as_bytes());
    input.push(0);
    input.extend_from_slice(event_id.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(4 + 32);
    id.push_str("msg_");
    for b in &digest.as_ref()[..16] {
        id.push(HEX[(b >> 4) as usize] as char);
        id.push(HEX[(b & 15) as usize] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_ids_are_stable_and_distinct() {
        assert_eq!(webhook_id("client-1", "e-1"), webhook_id("client-1", "e-1"));
        assert_ne!(webhook_id("client-1", "e-1"), webhook_id("client-2", "e-1"));
        assert_eq!(webhook_id("c", "é\n").len(), 4 + 32);
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(
            parse_schedule("100ms, 2s,1m").unwrap(),
            vec![Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(60)]
        );
        assert_eq!(parse_schedule("").unwrap(), Vec::<Duration>::new());
        assert!(parse_schedule("5x").is_err());
        assert_eq!(Settings::default().schedule.len(), 7);
    }
}
