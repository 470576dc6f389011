//! An in-memory SQS double behind [`MessageQueue`], for the faults LocalStack cannot
//! produce on demand: failed deletes, failed or refused visibility changes, a receive
//! that never answers. It keeps SQS's rules that matter to the processor: a received
//! message is invisible until its deadline, a new receipt handle per receive, and a
//! handle that stops working once its message became visible again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use event_processor::sqs::{EntryFailure, MessageQueue, QueueAttributes, QueueError, Received};
use futures::future::BoxFuture;

struct Message {
    id: String,
    body: String,
    visible_at: Instant,
    handle: Option<String>,
    receive_count: i32,
    deleted: bool,
}

#[derive(Default)]
pub struct MemoryQueue {
    messages: Mutex<Vec<Message>>,
    next: AtomicUsize,
    /// The next N `ChangeMessageVisibilityBatch` calls fail as a whole (throttling).
    pub fail_visibility_calls: AtomicUsize,
    /// The next N `DeleteMessageBatch` calls fail as a whole.
    pub fail_deletes: AtomicUsize,
    /// Receives wait forever (a call stuck in the network).
    pub hang_receives: AtomicBool,
    /// Messages received while already received before (SQS redelivered them).
    pub redeliveries: AtomicUsize,
    pub visibility_calls: AtomicUsize,
    /// Messages per receive that returned any, and per delete call, in call order.
    pub receive_sizes: Mutex<Vec<usize>>,
    pub delete_sizes: Mutex<Vec<usize>>,
}

impl MemoryQueue {
    pub fn send(&self, body: impl Into<String>) -> String {
        let id = format!("mem-{}", self.next.fetch_add(1, SeqCst));
        self.messages.lock().unwrap().push(Message {
            id: id.clone(),
            body: body.into(),
            visible_at: Instant::now(),
            handle: None,
            receive_count: 0,
            deleted: false,
        });
        id
    }

    /// Messages not deleted yet.
    pub fn remaining(&self) -> usize {
        self.messages.lock().unwrap().iter().filter(|m| !m.deleted).count()
    }

    fn refused(index: usize, code: &str) -> EntryFailure {
        EntryFailure { index, code: code.into(), message: "refused by the double".into(), sender_fault: true }
    }

    /// Takes one from `counter` if it is above 0.
    fn take(counter: &AtomicUsize) -> bool {
        counter.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

impl MessageQueue for MemoryQueue {
    fn url(&self) -> &str {
        "memory://queue"
    }

    fn attributes(&self) -> BoxFuture<'_, Result<QueueAttributes, QueueError>> {
        Box::pin(async {
            Ok(QueueAttributes { visibility_timeout: Duration::from_secs(30), max_message_size: 262_144, fifo: false })
        })
    }

    fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Received>, QueueError>> {
        Box::pin(async move {
            if self.hang_receives.load(SeqCst) {
                futures::future::pending::<()>().await;
            }
            let until = tokio::time::Instant::now() + wait;
            loop {
                let now = Instant::now();
                let mut received = Vec::new();
                for m in self.messages.lock().unwrap().iter_mut() {
                    if received.len() == max {
                        break;
                    }
                    if m.deleted || m.visible_at > now {
                        continue;
                    }
                    if m.receive_count > 0 {
                        self.redeliveries.fetch_add(1, SeqCst);
                    }
                    m.receive_count += 1;
                    m.visible_at = now + visibility;
                    let handle = format!("{}#{}", m.id, m.receive_count);
                    m.handle = Some(handle.clone());
                    received.push(Received {
                        message_id: m.id.clone(),
                        receipt_handle: handle,
                        body: m.body.clone(),
                        receive_count: m.receive_count,
                        sent_at: Some(Utc::now()),
                        received_at: Utc::now(),
                    });
                }
                if !received.is_empty() {
                    self.receive_sizes.lock().unwrap().push(received.len());
                }
                if !received.is_empty() || tokio::time::Instant::now() >= until {
                    return Ok(received);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    fn delete<'a>(&'a self, receipt_handles: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<EntryFailure>, QueueError>> {
        Box::pin(async move {
            if Self::take(&self.fail_deletes) {
                return Err(QueueError::new("delete failed (injected)"));
            }
            self.delete_sizes.lock().unwrap().push(receipt_handles.len());
            let mut messages = self.messages.lock().unwrap();
            let mut failures = Vec::new();
            for (index, handle) in receipt_handles.iter().enumerate() {
                match messages.iter_mut().find(|m| m.handle.as_deref() == Some(*handle)) {
                    Some(m) => m.deleted = true,
                    None => failures.push(Self::refused(index, "ReceiptHandleIsInvalid")),
                }
            }
            Ok(failures)
        })
    }

    fn change_visibility<'a>(
        &'a self,
        receipt_handles: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, QueueError>> {
        Box::pin(async move {
            self.visibility_calls.fetch_add(1, SeqCst);
            if timeout > Duration::ZERO && Self::take(&self.fail_visibility_calls) {
                return Err(QueueError::new("ChangeMessageVisibilityBatch throttled (injected)"));
            }
            let now = Instant::now();
            let mut messages = self.messages.lock().unwrap();
            let mut failures = Vec::new();
            for (index, handle) in receipt_handles.iter().enumerate() {
                match messages.iter_mut().find(|m| m.handle.as_deref() == Some(*handle)) {
                    // A message that became visible is no longer ours to extend.
                    Some(m) if !m.deleted && m.visible_at > now => m.visible_at = now + timeout,
                    _ => failures.push(Self::refused(index, "ReceiptHandleIsInvalid")),
                }
            }
            Ok(failures)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }
}
