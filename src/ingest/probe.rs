//! What the processor's `/healthz`, `/readyz` and `/metrics` report.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::CommitWatch;
use crate::sqs::MessageQueue;
use crate::store::Store;
use crate::telemetry::{store_and_queue_ready, Liveness, Probe, Stats};
use crate::validation::Reason;

/// The processor's view for the operator endpoint.
pub struct ProcessorProbe {
    pub stats: Arc<Stats>,
    pub liveness: Arc<Liveness>,
    pub commits: Arc<CommitWatch>,
    pub store: Store,
    pub queue: Arc<dyn MessageQueue>,
}

impl Probe for ProcessorProbe {
    /// The loops turn, and no commit attempt outlived its deadline (the database
    /// calls have one, so an attempt that old means a committer is stuck).
    fn live(&self) -> Result<(), String> {
        self.liveness.check("processor loops")?;
        let limit = self.store.deadline() * 2;
        match self.commits.oldest() {
            Some(running) if running > limit => {
                Err(format!("a commit has been running for {}s (deadline {}s)", running.as_secs(), limit.as_secs() / 2))
            }
            _ => Ok(()),
        }
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(store_and_queue_ready(&self.store, &*self.queue))
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

/// Publishes the depth of the source queue and of its dead-letter queue every 15 s,
/// as `event_processor_queue_messages{queue="source"|"dead_letter"}`: the backlog an
/// autoscaler reads, and messages that left the pipeline for good and need an operator.
pub async fn report_queue_depths(source: crate::sqs::Queue, dead_letters: Option<crate::sqs::Queue>) {
    loop {
        if let Ok((waiting, _in_flight)) = source.depth().await {
            metrics::gauge!("event_processor_queue_messages", "queue" => "source").set(waiting as f64);
        }
        if let Some(dlq) = &dead_letters {
            if let Ok((visible, in_flight)) = dlq.depth().await {
                metrics::gauge!("event_processor_queue_messages", "queue" => "dead_letter")
                    .set((visible + in_flight) as f64);
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_commit_running_past_twice_its_deadline_fails_the_liveness_check() {
        // The pool connects lazily: nothing listens there, and nothing needs to.
        let store =
            Store::connect("postgres://nobody@127.0.0.1:9/none", 1).unwrap().with_deadline(Duration::from_millis(50));
        let probe = ProcessorProbe {
            stats: Arc::default(),
            liveness: Arc::default(),
            commits: Arc::default(),
            store,
            queue: Arc::new(crate::sqs::Queue::new(
                aws_sdk_sqs::Client::from_conf(
                    aws_sdk_sqs::Config::builder().behavior_version(aws_config::BehaviorVersion::latest()).build(),
                ),
                "memory://unused",
            )),
        };
        assert_eq!(probe.live(), Ok(()));
        let stuck = probe.commits.attempt();
        assert_eq!(probe.live(), Ok(()), "an attempt within its deadline is fine");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let error = probe.live().unwrap_err();
        assert!(error.contains("a commit has been running"), "{error}");
        drop(stuck);
        assert_eq!(probe.live(), Ok(()), "healthy again once the attempt ended");
    }
}
