//! Sending load: batches of generated events with `SendMessageBatch` at a chosen rate
//! and concurrency, each acknowledged event written to the manifest, with a progress
//! bar or progress lines and a summary.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::manifest::{self, Entry};
use crate::backoff::Backoff;
use crate::sqs::{Outbound, Queue, MAX_BATCH};

use super::api_sink::{ApiSink, Posted};
use super::generator::{Generator, Outgoing, SQS_MAX_BYTES};

/// How a run sends.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Events per second; 0 for as fast as possible.
    pub rate: f64,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Concurrent `SendMessageBatch` calls.
    pub concurrency: usize,
    /// Send the original producers' messages every 100 ms instead.
    pub legacy: bool,
    /// Show a progress bar (on a terminal) or periodic lines.
    pub progress: bool,
}

/// Where a run sends.
#[derive(Clone)]
pub enum Destination {
    Queue(Queue),
    /// Through the platform API, which judges each event before it reaches SQS.
    Api(ApiSink),
}

/// What a run sent.
#[derive(Debug, Default, Clone)]
pub struct LoadSummary {
    pub acknowledged: u64,
    pub failed: u64,
    /// Events the API refused, by reason (only when sending through the API).
    pub refused: BTreeMap<String, u64>,
    /// Refusals whose reason was not the one the generator expected.
    pub refused_unexpectedly: u64,
    /// Acknowledged events per expected outcome.
    pub by_expect: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl LoadSummary {
    pub fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends until the count or duration is reached, or `stop` is cancelled.
pub async fn run(
    destination: Destination,
    mut generator: Generator,
    settings: LoadSettings,
    manifest: Option<manifest::Writer>,
    stop: CancellationToken,
) -> anyhow::Result<LoadSummary> {
    let started = Instant::now();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(std::sync::Mutex::new((BTreeMap::<String, u64>::new(), 0u64)));
    let manifest = Arc::new(manifest);
    let (tx, rx) = mpsc::channel::<Vec<Outgoing>>(settings.concurrency.max(1) * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));

    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..settings.concurrency.max(1) {
        let (destination, rx, manifest) = (destination.clone(), rx.clone(), manifest.clone());
        let (acknowledged, failed, refused) = (acknowledged.clone(), failed.clone(), refused.clone());
        senders.spawn(async move {
            let mut by_expect: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let Some(batch) = rx.lock().await.recv().await else { break };
                let entries = match &destination {
                    Destination::Queue(queue) => send_batch(queue, &batch).await,
                    Destination::Api(api) => {
                        let mut entries = Vec::with_capacity(batch.len());
                        let mut first_error = None;
                        for posted in api.post(&batch).await {
                            match posted {
                                Posted::Accepted(entry) => entries.push(entry),
                                Posted::Refused { reason, matched } => {
                                    let mut r = refused.lock().expect("refused lock");
                                    *r.0.entry(reason).or_default() += 1;
                                    r.1 += u64::from(!matched);
                                }
                                Posted::Failed(e) => {
                                    first_error.get_or_insert(e);
                                }
                            }
                        }
                        if let Some(error) = first_error {
                            tracing::warn!(%error, "the API did not take some events of a batch");
                        }
                        entries
                    }
                };
                failed.fetch_add((batch.len() - entries.len()) as u64, Relaxed);
                acknowledged.fetch_add(entries.len() as u64, Relaxed);
                for e in &entries {
                    *by_expect.entry(e.expect.clone()).or_default() += 1;
                }
                if let Some(writer) = manifest.as_ref() {
                    writer.write(&entries)?;
                }
            }
            anyhow::Ok(by_expect)
        });
    }

    let progress = settings.progress.then(|| Progress::start(settings.count, acknowledged.clone(), failed.clone()));
    let deadline = settings.duration.map(|d| started + d);
    let per_batch =
        if settings.rate > 0.0 { (settings.rate / 10.0).clamp(1.0, MAX_BATCH as f64) as usize } else { MAX_BATCH };
    let mut generated: u64 = 0;
    let mut pending: VecDeque<Outgoing> = VecDeque::new();
    loop {
        if stop.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if settings.legacy {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(started + Duration::from_millis(100) * generated as u32 / 3) => {}
            }
            let round = generator.legacy_round();
            generated += 3;
            if tx.send(round).await.is_err() {
                break;
            }
            if settings.count.is_some_and(|c| generated >= c) {
                break;
            }
            continue;
        }
        let remaining = settings.count.map_or(u64::MAX, |c| c.saturating_sub(generated));
        if remaining == 0 && pending.is_empty() {
            break;
        }
        while pending.len() < per_batch && (pending.len() as u64) < remaining {
            pending.push_back(generator.next_event());
        }
        // Take what fits in one call: at most 10 messages and SQS's byte limit.
        let mut batch = Vec::with_capacity(per_batch);
        let mut bytes = 0;
        while let Some(next) = pending.front() {
            if batch.len() == per_batch || (!batch.is_empty() && bytes + next.body.len() > SQS_MAX_BYTES - 4_096) {
                break;
            }
            bytes += next.body.len();
            batch.push(pending.pop_front().expect("front exists"));
        }
        if settings.rate > 0.0 {
            let due = started + Duration::from_secs_f64(generated as f64 / settings.rate);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        generated += batch.len() as u64;
        if tx.send(batch).await.is_err() {
            break;
        }
    }
    drop(tx);

    let mut by_expect = BTreeMap::new();
    while let Some(result) = senders.join_next().await {
        for (k, v) in result?? {
            *by_expect.entry(k).or_insert(0) += v;
        }
    }
    if let Some(writer) = manifest.as_ref() {
        writer.finish()?;
    }
    if let Some(p) = progress {
        p.finish();
    }
    let (refused, refused_unexpectedly) = std::mem::take(&mut *refused.lock().expect("refused lock"));
    let refused_total: u64 = refused.values().sum();
    Ok(LoadSummary {
        acknowledged: acknowledged.load(Relaxed),
        // A refusal is an answer, not a failure to send.
        failed: failed.load(Relaxed) - refused_total,
        refused,
        refused_unexpectedly,
        by_expect,
        elapsed: started.elapsed(),
    })
}

/// Sends one batch, retrying the call and refused entries; returns the manifest
/// entries of what SQS acknowledged.
async fn send_batch(queue: &Queue, batch: &[Outgoing]) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(batch.len());
    let mut todo: Vec<&Outgoing> = batch.iter().collect();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    for _attempt in 0..5 {
        // A FIFO queue keeps each tenant's events in order (the group) and takes the
        // event id, hashed to fit SQS's alphabet, as the deduplication id.
        let dedup: Vec<Option<String>> = todo
            .iter()
            .map(|o| queue.is_fifo().then(|| manifest::sha256_hex(o.event_id.as_deref().unwrap_or(&o.body).as_bytes())))
            .collect();
        let messages: Vec<Outbound<'_>> = todo
            .iter()
            .zip(&dedup)
            .map(|(o, dedup)| Outbound {
                body: &o.body,
                group: queue.is_fifo().then(|| o.client_id.as_deref().unwrap_or("no-client")),
                dedup: dedup.as_deref(),
            })
            .collect();
        let mut retry = Vec::new();
        match queue.send_messages(&messages).await {
            Ok(results) => {
                for (outgoing, result) in todo.iter().zip(results) {
                    match result {
                        Ok(message_id) => entries.push(Entry::acknowledged(outgoing, message_id, None)),
                        Err(f) if f.sender_fault => {
                            tracing::warn!(code = %f.code, message = %f.message, kind = outgoing.kind, "SQS refused a message");
                        }
                        Err(_) => retry.push(*outgoing),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "send failed; retrying");
                retry = todo.clone();
            }
        }
        if retry.is_empty() {
            break;
        }
        todo = retry;
        tokio::time::sleep(backoff.next_delay()).await;
    }
    entries
}

/// A progress bar on a terminal, a line every 5 seconds elsewhere.
struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(count: Option<u64>, acknowledged: Arc<AtomicU64>, failed: Arc<AtomicU64>) -> Progress {
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = match count {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} sent, {per_sec} {msg}",
                )
                .expect("valid template"),
            );
            let b = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    b.set_position(acknowledged.load(Relaxed));
                    let f = failed.load(Relaxed);
                    if f > 0 {
                        b.set_message(format!("({f} failed)"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            Progress { task, bar: Some(bar) }
        } else {
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let n = acknowledged.load(Relaxed);
                    let rate = n as f64 / started.elapsed().as_secs_f64();
                    tracing::info!(
                        sent = n,
                        failed = failed.load(Relaxed),
                        rate_per_s = format_args!("{rate:.0}"),
                        "producing"
                    );
                }
            });
            Progress { task, bar: None }
        }
    }

    fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
