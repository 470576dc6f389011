//! Receiving: long polls that wait for the database and for in-flight room, then
//! classify each message and pass it to the batcher.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::held::cost_units;
use super::settle::Pending;
use super::{within, Shared, CALL_DEADLINE};
use crate::backoff::Backoff;
use crate::registry::Registry;
use crate::sqs::{Received, MAX_BATCH};
use crate::store::{Arrival, Classified};
use crate::telemetry::Stats;
use crate::validation::{classify, Verdict};

/// On shutdown, how long a receive already under way may take to answer.
const RECEIVE_GRACE: Duration = Duration::from_millis(500);

/// One receive loop: wait for the database and for in-flight room, long-poll,
/// classify, pass the receive's messages on together. Errors back off with jitter.
pub(super) async fn poll(shared: Arc<Shared>, tx: mpsc::Sender<Vec<Pending>>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(20));
    let mut healthy = shared.healthy.subscribe();
    let cancel = shared.shutdown.clone();
    loop {
        // What is received while the database is down could not be stored: don't.
        tokio::select! {
            _ = cancel.cancelled() => return,
            ok = healthy.wait_for(|h| *h) => if ok.is_err() { return },
        }
        // Room for a whole receive of the largest messages; what is not used is given back.
        let room = async {
            let slots = shared.held.slots.acquire_many(MAX_BATCH as u32).await;
            let bytes = shared.held.bytes.acquire_many(shared.receive_units).await;
            (slots.expect("slots are never closed"), bytes.expect("bytes are never closed"))
        };
        let (slots, bytes) = tokio::select! {
            _ = cancel.cancelled() => return,
            room = room => room,
        };
        slots.forget();
        bytes.forget();
        let give_back = |messages: usize, units: u32| {
            shared.held.slots.add_permits(MAX_BATCH - messages);
            shared.held.bytes.add_permits((shared.receive_units - units) as usize);
        };
        let asked = Instant::now();
        let wait = shared.settings().wait_time;
        let receive = within(wait + CALL_DEADLINE, shared.processor.queue.receive(MAX_BATCH, wait, shared.visibility));
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            // A receive that is answering lets its messages be finished rather than
            // dropped (they would stay invisible for a whole visibility timeout); one
            // that is only waiting on an empty queue is abandoned.
            _ = cancel.cancelled() => match tokio::time::timeout(RECEIVE_GRACE, &mut receive).await {
                Ok(r) => r,
                Err(_) => {
                    give_back(0, 0);
                    return;
                }
            },
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                give_back(0, 0);
                let delay = backoff.next_delay();
                if e.queue_missing || backoff.failures() == 1 || backoff.failures() % 10 == 0 {
                    warn!(error = %e, failures = backoff.failures(), retry_in = ?delay, "receive failed");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if backoff.failures() > 0 {
            info!(after_failures = backoff.failures(), "receiving again");
            backoff.reset();
        }
        let costs: Vec<u32> = messages.iter().map(|m| cost_units(m.body.len())).collect();
        // The budget fits MAX_BATCH messages of the largest size SQS accepts (checked at
        // start), so this never exceeds the reservation.
        give_back(messages.len(), costs.iter().sum::<u32>().min(shared.receive_units));
        Stats::add(&shared.stats().received, messages.len() as u64);
        // SQS started the visibility timeout somewhere between the request and the
        // answer; count from up to a second before the answer, never later.
        let answered = Instant::now();
        let visible_until = answered + shared.visibility - (answered - asked).min(Duration::from_secs(1));
        shared.held.hold(messages.iter().zip(&costs).map(|(m, c)| (m.receipt_handle.as_str(), *c)), visible_until);
        if messages.is_empty() {
            continue;
        }
        let mut registry = shared.processor.registry.snapshot();
        let mut classified = Vec::with_capacity(messages.len());
        for message in messages {
            let Received { receipt_handle, message_id, body, receive_count, sent_at, received_at } = message;
            let arrival = Arrival { message_id, body, receive_count, sent_at, received_at };
            let verdict = shared.classify(&arrival, &mut registry).await;
            classified.push(Pending { receipt_handle, row: Classified { arrival, verdict } });
        }
        // The receive goes on whole: the batcher keeps it together (see `settle::batch`).
        if tx.send(classified).await.is_err() {
            return; // the batcher is gone: `run` releases what is held
        }
    }
}

impl Shared {
    /// Classifies a message. Before rejecting one for a registry miss, makes sure the
    /// registry includes every change committed before the message was received.
    async fn classify(&self, message: &Arrival, registry: &mut Arc<Registry>) -> Verdict {
        let verdict = classify(&message.body, &message.message_id, registry);
        let registry_miss = verdict.reason().is_some_and(|r| r.is_registry_miss());
        if !registry_miss || self.processor.registry.checked_since(message.received_at) {
            return verdict;
        }
        self.check_registry(message.received_at).await;
        let latest = self.processor.registry.snapshot();
        if Arc::ptr_eq(&latest, registry) {
            return verdict;
        }
        *registry = latest;
        classify(&message.body, &message.message_id, registry)
    }

    /// Brings the registry snapshot up to every change committed before `at`; a failure
    /// is logged and leaves the snapshot as it was.
    pub(super) async fn check_registry(&self, at: chrono::DateTime<chrono::Utc>) {
        let check = async {
            match self.processor.store.pool().get().await {
                Ok(conn) => self.processor.registry.ensure_current(&**conn, at).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let deadline = self.processor.store.deadline();
        let result = tokio::time::timeout(deadline, check)
            .await
            .unwrap_or_else(|_| Err(format!("no answer from the database within {deadline:?}")));
        if let Err(e) = result {
            warn!(error = %e, "registry check failed");
        }
    }
}
