//! One event's delivery: signed posts until a 2xx, retries on the schedule (with
//! `Retry-After` as a floor), parking when the schedule runs out, and the reasons that
//! disable a consumer.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use tokio::time::Instant;
use tracing::warn;

use super::{AttemptRow, Fate, Parked, Run};
use crate::delivery::log::LogEvent;
use crate::delivery::webhook::Attempt;
use crate::delivery::webhook_id;

impl Run<'_> {
    /// Posts one event until it is delivered, parked, or the consumer must stop.
    pub(super) async fn deliver(&self, event: &LogEvent) -> Fate {
        let settings = &self.worker.settings;
        let body = Bytes::from(event.body());
        let id = webhook_id(&event.client_id, &event.event_id);
        let label = self.target.label.as_str();
        for attempt in 1.. {
            if self.worker.cancel.is_cancelled() || !self.worker.lease.covers(self.target.timeout) {
                return Fate::Stopped;
            }
            let at = Utc::now();
            let started = Instant::now();
            let outcome = self
                .worker
                .poster
                .post(&self.target.endpoint, &self.target.secret, &id, &body, self.target.timeout)
                .await;
            if matches!(outcome, Attempt::Delivered { .. }) {
                self.meters.delivered_attempts.increment(1);
            } else {
                metrics::counter!("event_sender_attempts_total", "outcome" => outcome.class()).increment(1);
            }
            let error = match &outcome {
                Attempt::Delivered { .. } => None,
                Attempt::Gone => Some("410 Gone".to_owned()),
                Attempt::Failed { error, .. } => Some(error.clone()),
            };
            self.pending.lock().expect("pending").attempts.push(AttemptRow {
                position: event.position,
                event_id: event.event_id.clone(),
                attempt,
                status: outcome.status().map(i32::from),
                error: error.clone(),
                duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
                at,
            });
            let (status, snippet, retry_after) = match outcome {
                Attempt::Delivered { .. } => {
                    self.meters.delivered.increment(1);
                    let lag = (Utc::now() - event.stored_at).to_std().unwrap_or_default();
                    self.meters.lag.record(lag.as_secs_f64());
                    *self.failing_since.lock().expect("failing") = None;
                    return Fate::Delivered;
                }
                // Not the URL: endpoints may carry tokens, and reasons are logged and listed.
                Attempt::Gone => return Fate::Disable("the endpoint answered 410 Gone".to_owned()),
                Attempt::Failed { status, snippet, retry_after, .. } => (status, snippet, retry_after),
            };
            let error = error.unwrap_or_default();
            let since = *self.failing_since.lock().expect("failing").get_or_insert(at);
            if (Utc::now() - since).to_std().unwrap_or_default() >= settings.disable_after {
                return Fate::Disable(format!("every attempt failed since {since} (last: {error})"));
            }
            let Some(delay) = settings.schedule.get(attempt as usize - 1) else {
                metrics::counter!("event_sender_parked_total").increment(1);
                warn!(consumer = label, event_id = %event.event_id, attempts = attempt, %error, "retries exhausted: parked");
                return Fate::Parked(Parked {
                    position: event.position,
                    event_id: event.event_id.clone(),
                    attempts: attempt,
                    last_status: status.map(i32::from),
                    last_error: error,
                    snippet,
                });
            };
            // `Retry-After` is a floor: the schedule still bounds how long an event waits.
            let delay = jitter(*delay).max(retry_after.unwrap_or_default().min(settings.max_retry_after));
            metrics::counter!("event_sender_retries_total").increment(1);
            if attempt == 1 || attempt % 5 == 0 {
                warn!(consumer = label, event_id = %event.event_id, attempt, %error, retry_in = ?delay, "delivery failed");
            }
            tokio::select! {
                _ = self.worker.cancel.cancelled() => return Fate::Stopped,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        unreachable!("the attempt loop only returns")
    }
}

/// `delay` ±20 %, so retries of many events do not arrive together.
fn jitter(delay: Duration) -> Duration {
    use rand::Rng;
    delay.mul_f64(rand::rng().random_range(0.8..=1.2))
}
