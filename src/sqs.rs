//! SQS: receive, delete, change visibility and send, with the AWS SDK.
//!
//! This is the only module that speaks SQS. It hands the rest of the code plain
//! [`Received`] messages and reports per-entry batch failures, which SQS returns
//! inside successful responses and which must never be ignored.
//!
//! The processor sees a queue only through [`MessageQueue`], so tests can drive the
//! faults SQS cannot produce on demand (a failed delete, a throttled visibility
//! change) through an in-memory double, in addition to the tests against LocalStack.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;

/// SQS takes at most 10 entries per batch call and returns at most 10 messages.
pub const MAX_BATCH: usize = 10;

/// A message as received, owned by the processor until it is deleted or released.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    /// Needed to delete the message or change its visibility; changes per receive.
    pub receipt_handle: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on first delivery.
    pub receive_count: i32,
    /// `SentTimestamp`: when the producer's send was acknowledged.
    pub sent_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}

/// An SQS call failed as a whole (network, throttling, missing queue, ...).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct QueueError {
    message: String,
    /// The queue does not exist (a configuration problem, not an outage).
    pub queue_missing: bool,
}

impl QueueError {
    /// A failure with this message, for queues other than SQS (test doubles).
    pub fn new(message: impl Into<String>) -> Self {
        QueueError { message: message.into(), queue_missing: false }
    }

    fn from_sdk<E, R>(error: aws_sdk_sqs::error::SdkError<E, R>) -> Self
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = DisplayErrorContext(&error).to_string();
        let queue_missing = message.contains("NonExistentQueue") || message.contains("QueueDoesNotExist");
        QueueError { message, queue_missing }
    }
}

/// One entry of a batch call that SQS refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Index of the entry in the slice passed in.
    pub index: usize,
    pub code: String,
    pub message: String,
    /// SQS says the request was wrong (e.g. an expired receipt handle): retrying won't help.
    pub sender_fault: bool,
}

impl EntryFailure {
    /// The receipt handle expired (the message became visible and was received again):
    /// the next receiver will be deduplicated by the keys.
    pub fn receipt_expired(&self) -> bool {
        self.code.contains("ReceiptHandleIsInvalid")
            || self.message.contains("expired")
            || self.code.contains("InvalidParameterValue")
    }
}

/// What the processor reads of a queue's attributes when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAttributes {
    /// The queue's own visibility timeout (0 is possible: then the processor's default applies).
    pub visibility_timeout: Duration,
    /// `MaximumMessageSize`: the largest body the queue accepts, in bytes.
    pub max_message_size: usize,
    /// A FIFO queue (name ending `.fifo`): messages of one group arrive in order.
    pub fifo: bool,
}

/// The queue operations the processor uses. [`Queue`] is the SQS implementation.
pub trait MessageQueue: Send + Sync + 'static {
    /// Where the queue is, for logs.
    fn url(&self) -> &str;
    /// Visibility timeout, largest message size and whether the queue is FIFO.
    fn attributes(&self) -> BoxFuture<'_, Result<QueueAttributes, QueueError>>;
    /// Long-polls for up to `max` messages, each kept invisible for `visibility` (set
    /// explicitly on every receive, whatever the queue's attribute says).
    fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Received>, QueueError>>;
    /// Deletes up to 10 messages; returns the entries refused.
    fn delete<'a>(&'a self, receipt_handles: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<EntryFailure>, QueueError>>;
    /// Sets the visibility timeout of up to 10 held messages; returns the entries refused.
    fn change_visibility<'a>(
        &'a self,
        receipt_handles: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, QueueError>>;
    /// Answers a cheap call (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>>;
}

impl MessageQueue for Queue {
    fn url(&self) -> &str {
        &self.url
    }

    fn attributes(&self) -> BoxFuture<'_, Result<QueueAttributes, QueueError>> {
        Box::pin(async move {
            let values = self
                .numeric_attributes(&[QueueAttributeName::VisibilityTimeout, QueueAttributeName::MaximumMessageSize])
                .await?;
            let get = |name| values.get(&name).copied();
            Ok(QueueAttributes {
                visibility_timeout: Duration::from_secs(get(QueueAttributeName::VisibilityTimeout).unwrap_or(30)),
                max_message_size: get(QueueAttributeName::MaximumMessageSize).unwrap_or(262_144) as usize,
                fifo: self.is_fifo(),
            })
        })
    }

    fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Received>, QueueError>> {
        Box::pin(self.receive_with(max, wait, Some(visibility)))
    }

    fn delete<'a>(&'a self, receipt_handles: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<EntryFailure>, QueueError>> {
        Box::pin(Queue::delete(self, receipt_handles))
    }

    fn change_visibility<'a>(
        &'a self,
        receipt_handles: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, QueueError>> {
        Box::pin(Queue::change_visibility(self, receipt_handles, timeout))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move { self.depth().await.map(|_| ()) })
    }
}

/// The SDK client, configured from the standard AWS environment
/// (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL[_SQS]`).
pub async fn sdk_client() -> anyhow::Result<Client> {
    let config = aws_config::defaults(BehaviorVersion::v2026_01_12())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                // Long polls wait up to 20 s for messages.
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await;
    if config.region().is_none() {
        anyhow::bail!("AWS_REGION: expected an AWS region such as us-east-1, and none is configured");
    }
    if config.credentials_provider().is_none() {
        anyhow::bail!("AWS_ACCESS_KEY_ID: no AWS credentials found (LocalStack takes any, e.g. `test`)");
    }
    Ok(Client::new(&config))
}

/// One SQS queue, by URL.
#[derive(Clone, Debug)]
pub struct Queue {
    client: Client,
    url: String,
}

impl Queue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Queue { client, url: url.into() }
    }

    /// Looks the queue up by name.
    pub async fn named(client: Client, name: &str) -> Result<Queue, QueueError> {
        let output = client.get_queue_url().queue_name(name).send().await.map_err(QueueError::from_sdk)?;
        let url = output.queue_url.unwrap_or_default();
        Ok(Queue { client, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Messages waiting, and messages received but not deleted (in flight).
    pub async fn depth(&self) -> Result<(u64, u64), QueueError> {
        let values = self
            .numeric_attributes(&[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ])
            .await?;
        let get = |name| values.get(&name).copied().unwrap_or(0);
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages)
                + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    /// The named attributes that are numbers, in one GetQueueAttributes call.
    async fn numeric_attributes(
        &self,
        names: &[QueueAttributeName],
    ) -> Result<std::collections::HashMap<QueueAttributeName, u64>, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(QueueError::from_sdk)?;
        Ok(output
            .attributes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, value)| value.parse().ok().map(|n| (name, n)))
            .collect())
    }

    /// Long-polls for up to `max` messages, with the queue's visibility timeout.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        self.receive_with(max, wait, None).await
    }

    /// Long-polls for up to `max` messages, with `visibility` instead of the queue's
    /// visibility timeout when given.
    pub async fn receive_with(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Received>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .set_visibility_timeout(visibility.map(|v| v.as_secs().clamp(1, 43_200) as i32))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(QueueError::from_sdk)?;
        let received_at = Utc::now();
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let attributes = m.attributes.unwrap_or_default();
                let attribute = |name| attributes.get(&name).and_then(|v| v.parse::<i64>().ok());
                Received {
                    message_id: m.message_id.unwrap_or_default(),
                    receipt_handle: m.receipt_handle.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1) as i32,
                    sent_at: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                    received_at,
                }
            })
            .collect())
    }

    /// Deletes up to 10 messages by receipt handle; returns the entries SQS refused.
    pub async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        let entries = entries(receipt_handles, |id, handle| {
            DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(*handle).build()
        });
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(QueueError::from_sdk)?;
        Ok(failures(output.failed()))
    }

    /// Sets the visibility timeout of up to 10 held messages: longer to keep them
    /// while work is slow, 0 to release them to other consumers at once.
    pub async fn change_visibility(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let entries = entries(receipt_handles, |id, handle| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(id)
                .receipt_handle(*handle)
                .visibility_timeout(timeout.as_secs().min(43_200) as i32)
                .build()
        });
        let output = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(QueueError::from_sdk)?;
        Ok(failures(output.failed()))
    }

    /// A FIFO queue: every message needs a group and a deduplication id.
    pub fn is_fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }

    /// Sends up to 10 bodies in one call; returns, per body, the SQS message id or the
    /// refusal.
    pub async fn send(&self, bodies: &[String]) -> Result<Vec<Result<String, EntryFailure>>, QueueError> {
        let messages: Vec<Outbound<'_>> =
            bodies.iter().map(|body| Outbound { body, group: None, dedup: None }).collect();
        self.send_messages(&messages).await
    }

    /// Sends up to 10 messages in one call, with their FIFO group and deduplication id
    /// when given; returns, per message, the SQS message id or the refusal.
    pub async fn send_messages(
        &self,
        messages: &[Outbound<'_>],
    ) -> Result<Vec<Result<String, EntryFailure>>, QueueError> {
        let entries = entries(messages, |id, m| {
            SendMessageBatchRequestEntry::builder()
                .id(id)
                .message_body(m.body)
                .set_message_group_id(m.group.map(str::to_owned))
                .set_message_deduplication_id(m.dedup.map(str::to_owned))
                .build()
        });
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(QueueError::from_sdk)?;
        let mut results: Vec<Result<String, EntryFailure>> = (0..messages.len())
            .map(|index| {
                Err(EntryFailure {
                    index,
                    code: "Missing".into(),
                    message: "no result for this entry".into(),
                    sender_fault: false,
                })
            })
            .collect();
        for ok in output.successful() {
            if let Some(slot) = ok.id().parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                *slot = Ok(ok.message_id().to_owned());
            }
        }
        for failure in failures(output.failed()) {
            let index = failure.index;
            if let Some(slot) = results.get_mut(index) {
                *slot = Err(failure);
            }
        }
        Ok(results)
    }
}

/// A message to send. A FIFO queue keeps the order of one `group` and drops a second
/// message with the same `dedup` id within five minutes.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub body: &'a str,
    pub group: Option<&'a str>,
    pub dedup: Option<&'a str>,
}

/// Batch entries with ids "0".."n-1", so a failure's id is its entry's index.
fn entries<I, T, E: std::fmt::Debug>(items: &[I], build: impl Fn(String, &I) -> Result<T, E>) -> Vec<T> {
    items.iter().enumerate().map(|(i, item)| build(i.to_string(), item).expect("every required field is set")).collect()
}

/// The entries a batch call refused, by index.
fn failures(failed: &[aws_sdk_sqs::types::BatchResultErrorEntry]) -> Vec<EntryFailure> {
    failed
        .iter()
        .map(|f| EntryFailure {
            index: f.id().parse().unwrap_or(usize::MAX),
            code: f.code().to_owned(),
            message: f.message().unwrap_or_default().to_owned(),
            sender_fault: f.sender_fault(),
        })
        .collect()
}
