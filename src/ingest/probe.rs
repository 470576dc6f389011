//! What the processor's `/healthz`, `/readyz` and `/metrics` report.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::sqs::Queue;
use crate::store::Store;
use crate::telemetry::{store_and_queue_ready, Liveness, Probe, Stats};
use crate::validation::Reason;

/// The processor's view for the operator endpoint.
pub struct ProcessorProbe {
    pub stats: Arc<Stats>,
    pub liveness: Arc<Liveness>,
    pub store: Store,
    pub queue: Queue,
}

impl Probe for ProcessorProbe {
    fn live(&self) -> Result<(), String> {
        self.liveness.check("processor loops")
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(store_and_queue_ready(&self.store, &self.queue))
    }

    /// Counters live in [`Stats`] (cheap atomics on the hot path) and are copied into
    /// the recorder when scraped.
    fn export(&self) {
        let s = self.stats.snapshot();
        let counters = [
            ("event_processor_received_total", s.received),
            ("event_processor_stored_total", s.stored),
            ("event_processor_duplicates_total", s.duplicates),
            ("event_processor_deleted_total", s.deleted),
            ("event_processor_delete_failures_total", s.delete_failures),
            ("event_processor_expired_receipts_total", s.expired_receipts),
            ("event_processor_commit_retries_total", s.commit_retries),
            ("event_processor_released_total", s.released),
            ("event_processor_visibility_extensions_total", s.extended),
        ];
        for (name, value) in counters {
            metrics::counter!(name).absolute(value);
        }
        for reason in Reason::ALL {
            metrics::counter!("event_processor_rejected_total", "reason" => reason.code())
                .absolute(s.rejected_for(reason));
        }
    }
}
