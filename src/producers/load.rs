//! Load generation: valid events from templates across tenants, the kinds of bad
//! input the processor must survive, producer-side duplicates, or exactly the
//! original producers' messages (`--legacy`); sent with `SendMessageBatch` at a
//! chosen rate and concurrency, each acknowledged event written to the manifest.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::manifest::{self, Entry, Expect};
use super::templates::{render, EventsFile};
use crate::backoff::Backoff;
use crate::queue::{Queue, MAX_BATCH};
use crate::rejection::Reason;

/// SQS's limit for one message and for one batch call, in bytes.
pub const SQS_MAX_BYTES: usize = 262_144;

/// The kinds of bad input, each with the rejection it must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalid {
    NotJson,
    MissingField,
    WrongType,
    UnknownClient,
    UnknownEventType,
    NotSubscribed,
    SchemaViolation,
    NulInString,
    Oversized,
    /// Random bytes, as text.
    RandomBytes,
    /// 10,000 nested arrays.
    DeepNesting,
    /// A number beyond f64.
    HugeNumber,
    /// An SQL injection attempt as the client id.
    SqlLike,
    /// Control characters (escaped, as SQS allows) in the client id.
    ControlChars,
}

impl Invalid {
    pub const ALL: [Invalid; 14] = [
        Invalid::NotJson,
        Invalid::MissingField,
        Invalid::WrongType,
        Invalid::UnknownClient,
        Invalid::UnknownEventType,
        Invalid::NotSubscribed,
        Invalid::SchemaViolation,
        Invalid::NulInString,
        Invalid::Oversized,
        Invalid::RandomBytes,
        Invalid::DeepNesting,
        Invalid::HugeNumber,
        Invalid::SqlLike,
        Invalid::ControlChars,
    ];

    pub fn reason(self) -> Reason {
        match self {
            Invalid::NotJson | Invalid::RandomBytes | Invalid::DeepNesting | Invalid::HugeNumber => {
                Reason::MalformedJson
            }
            Invalid::SqlLike | Invalid::ControlChars => Reason::UnknownClient,
            Invalid::MissingField | Invalid::WrongType => Reason::InvalidEnvelope,
            Invalid::UnknownClient => Reason::UnknownClient,
            Invalid::UnknownEventType => Reason::UnknownEventType,
            Invalid::NotSubscribed => Reason::NotSubscribed,
            Invalid::SchemaViolation | Invalid::Oversized => Reason::SchemaViolation,
            Invalid::NulInString => Reason::Unstorable,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Invalid::NotJson => "not_json",
            Invalid::MissingField => "missing_field",
            Invalid::WrongType => "wrong_type",
            Invalid::UnknownClient => "unknown_client",
            Invalid::UnknownEventType => "unknown_event_type",
            Invalid::NotSubscribed => "not_subscribed",
            Invalid::SchemaViolation => "schema_violation",
            Invalid::NulInString => "nul_in_string",
            Invalid::Oversized => "oversized",
            Invalid::RandomBytes => "random_bytes",
            Invalid::DeepNesting => "deep_nesting",
            Invalid::HugeNumber => "huge_number",
            Invalid::SqlLike => "sql_like",
            Invalid::ControlChars => "control_chars",
        }
    }
}

/// One message to send, with what must become of it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: String,
    pub expect: Expect,
    pub kind: &'static str,
    pub client_id: Option<String>,
    /// `None` when the body has no `event_id` (the SQS message id becomes the key).
    pub event_id: Option<String>,
}

/// The mix of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mix {
    /// Share of bad input, spread evenly over [`Invalid::ALL`].
    pub invalid_ratio: f64,
    /// Share of re-sends of an already sent valid event.
    pub duplicate_ratio: f64,
}

/// Generates events; deterministic for a seed.
pub struct Generator {
    events: EventsFile,
    mix: Mix,
    rng: StdRng,
    seq: u64,
    /// Recently generated valid events, to re-send as duplicates.
    recent: VecDeque<Outgoing>,
}

impl Generator {
    /// `clients`: spread load over `client-1..=n` (templates keep only those clients,
    /// and clients beyond the file's own are added to every template).
    pub fn new(mut events: EventsFile, mix: Mix, clients: Option<usize>, seed: Option<u64>) -> Generator {
        if let Some(n) = clients {
            let listed: std::collections::BTreeSet<String> =
                events.templates.iter().flat_map(|t| t.clients.iter().cloned()).collect();
            let wanted: Vec<String> = (1..=n).map(|i| format!("client-{i}")).collect();
            for t in &mut events.templates {
                t.clients.retain(|c| wanted.contains(c));
                t.clients.extend(wanted.iter().filter(|c| !listed.contains(*c)).cloned());
            }
            events.templates.retain(|t| !t.clients.is_empty());
        }
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Generator { events, mix, rng, seq: 0, recent: VecDeque::new() }
    }

    pub fn next_event(&mut self) -> Outgoing {
        self.seq += 1;
        let roll: f64 = self.rng.random();
        if roll < self.mix.invalid_ratio {
            let kind = *Invalid::ALL.choose(&mut self.rng).expect("non-empty");
            return self.invalid(kind);
        }
        if roll < self.mix.invalid_ratio + self.mix.duplicate_ratio && !self.recent.is_empty() {
            let i = self.rng.random_range(0..self.recent.len());
            let mut again = self.recent[i].clone();
            again.expect = Expect::Duplicate;
            again.kind = "duplicate";
            return again;
        }
        let valid = self.valid();
        if self.recent.len() == 1000 {
            self.recent.pop_front();
        }
        self.recent.push_back(valid.clone());
        valid
    }

    /// A valid event from a random template, for a random subscribed client.
    pub fn valid(&mut self) -> Outgoing {
        let (envelope, client_id, event_id) = self.envelope();
        Outgoing {
            body: envelope.to_string(),
            expect: Expect::Stored,
            kind: "valid",
            client_id: Some(client_id),
            event_id: Some(event_id),
        }
    }

    fn envelope(&mut self) -> (Value, String, String) {
        let template = self.events.pick(&mut self.rng).clone();
        let client_id = template.clients.choose(&mut self.rng).expect("non-empty").clone();
        let event_id = uuid::Uuid::new_v4().to_string();
        let envelope = json!({
            "event_id": event_id,
            "client_id": client_id,
            "event_type": template.event_type,
            "version": template.version,
            "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "payload": render(&template.payload, &mut self.rng, self.seq),
        });
        (envelope, client_id, event_id)
    }

    /// Bad input of one kind.
    pub fn invalid(&mut self, kind: Invalid) -> Outgoing {
        let (mut envelope, client_id, event_id) = self.envelope();
        let mut client = Some(client_id);
        let body = match kind {
            Invalid::NotJson => {
                client = None;
                match self.rng.random_range(0..3) {
                    0 => "Hello, I'm a bad message".to_owned(),
                    1 => {
                        let text = envelope.to_string();
                        text[..text.len() / 2].to_owned()
                    }
                    // Printable noise; the leading `~` can never start JSON.
                    _ => std::iter::once('~')
                        .chain((0..self.rng.random_range(1..200)).map(|_| self.rng.random_range(' '..='~')))
                        .collect(),
                }
            }
            Invalid::MissingField => {
                let field = *["client_id", "event_type"].choose(&mut self.rng).expect("non-empty");
                envelope.as_object_mut().expect("object").remove(field);
                if field == "client_id" {
                    client = None;
                }
                envelope.to_string()
            }
            Invalid::WrongType => {
                match self.rng.random_range(0..3) {
                    0 => envelope["version"] = json!("two"),
                    1 => envelope["event_type"] = json!(["user-app"]),
                    _ => envelope["occurred_at"] = json!(1_700_000_000),
                }
                envelope.to_string()
            }
            Invalid::RandomBytes => {
                client = None;
                // SQS accepts only tab, newline, carriage return and characters from
                // U+0020 up; the leading `~` can never start JSON.
                let bytes: Vec<u8> = (0..self.rng.random_range(1..2_000))
                    .map(|_| self.rng.random::<u8>())
                    .filter(|b| *b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'))
                    .collect();
                format!("~{}", String::from_utf8_lossy(&bytes).replace(['\u{FFFE}', '\u{FFFF}'], ""))
            }
            Invalid::DeepNesting => {
                let text = envelope.to_string();
                let open = text.find("\"payload\":").expect("payload") + "\"payload\":".len();
                format!("{}{}{}}}", &text[..open], "[".repeat(10_000), "]".repeat(10_000))
            }
            Invalid::HugeNumber => {
                envelope["payload"] = json!({});
                envelope.to_string().replace("\"payload\":{}", "\"payload\":{\"value\":1e400}")
            }
            Invalid::SqlLike => {
                let c = "client-1'; DROP TABLE message; --".to_owned();
                envelope["client_id"] = json!(c);
                client = Some(c);
                envelope.to_string()
            }
            Invalid::ControlChars => {
                let c = "client-\u{1}\u{1b}[31m\u{7f}".to_owned();
                envelope["client_id"] = json!(c);
                client = Some(c);
                envelope.to_string()
            }
            Invalid::UnknownClient => {
                let unknown = format!("client-unknown-{:08x}", self.rng.random::<u32>());
                envelope["client_id"] = json!(unknown);
                client = Some(unknown);
                envelope.to_string()
            }
            Invalid::UnknownEventType => {
                envelope["version"] = json!(99);
                envelope.to_string()
            }
            Invalid::NotSubscribed => {
                let t = &self.events.not_subscribed;
                envelope["client_id"] = json!(t.client_id);
                envelope["event_type"] = json!(t.event_type);
                envelope["version"] = json!(t.version);
                client = Some(t.client_id.clone());
                envelope.to_string()
            }
            Invalid::SchemaViolation => {
                envelope["payload"] = if self.rng.random() { json!({}) } else { json!(42) };
                envelope.to_string()
            }
            Invalid::NulInString => {
                envelope["payload"]["note"] = json!("before\u{0}after");
                envelope.to_string()
            }
            Invalid::Oversized => {
                // A string where the schema wants an object, sized to just under SQS's limit.
                envelope["payload"] = json!("");
                let room = SQS_MAX_BYTES - 2_048 - envelope.to_string().len();
                envelope["payload"] = json!("x".repeat(room));
                envelope.to_string()
            }
        };
        Outgoing {
            body,
            expect: Expect::Rejected(kind.reason()),
            kind: kind.name(),
            client_id: client,
            event_id: Some(event_id),
        }
    }

    /// The original producers' messages, unchanged; one in ten rounds adds their bad
    /// plain-text message.
    pub fn legacy_round(&mut self) -> Vec<Outgoing> {
        let mut round: Vec<Outgoing> = self
            .events
            .legacy
            .iter()
            .map(|m| Outgoing {
                body: m.to_string(),
                expect: Expect::Stored,
                kind: "legacy",
                client_id: m["client_id"].as_str().map(str::to_owned),
                event_id: None,
            })
            .collect();
        if self.rng.random_range(0..10) == 0 {
            round.push(Outgoing {
                body: "Hello, I'm a bad message".to_owned(),
                expect: Expect::Rejected(Reason::MalformedJson),
                kind: "legacy_bad",
                client_id: None,
                event_id: None,
            });
        }
        round
    }
}

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

/// What a run sent.
#[derive(Debug, Default, Clone)]
pub struct LoadSummary {
    pub acknowledged: u64,
    pub failed: u64,
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
    queue: Queue,
    mut generator: Generator,
    settings: LoadSettings,
    manifest: Option<manifest::Writer>,
    stop: CancellationToken,
) -> anyhow::Result<LoadSummary> {
    let started = Instant::now();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let manifest = Arc::new(manifest);
    let (tx, rx) = mpsc::channel::<Vec<Outgoing>>(settings.concurrency.max(1) * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));

    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..settings.concurrency.max(1) {
        let (queue, rx, manifest) = (queue.clone(), rx.clone(), manifest.clone());
        let (acknowledged, failed) = (acknowledged.clone(), failed.clone());
        senders.spawn(async move {
            let mut by_expect: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let Some(batch) = rx.lock().await.recv().await else { break };
                let entries = send_batch(&queue, &batch).await;
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
    Ok(LoadSummary {
        acknowledged: acknowledged.load(Relaxed),
        failed: failed.load(Relaxed),
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
        let bodies: Vec<String> = todo.iter().map(|o| o.body.clone()).collect();
        let mut retry = Vec::new();
        match queue.send(&bodies).await {
            Ok(results) => {
                for (outgoing, result) in todo.iter().zip(results) {
                    match result {
                        Ok(message_id) => entries.push(Entry {
                            event_id: outgoing.event_id.clone().or_else(|| Some(message_id.clone())),
                            client_id: outgoing.client_id.clone(),
                            sqs_message_id: message_id,
                            expect: outgoing.expect.to_string(),
                            kind: outgoing.kind.to_owned(),
                        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, RegistryFile};
    use crate::validation::classify;

    #[test]
    fn every_generated_event_classifies_as_expected() {
        let mut generator =
            Generator::new(EventsFile::demo(), Mix { invalid_ratio: 0.3, duplicate_ratio: 0.1 }, Some(5), Some(7));
        let extra = crate::registry::tenants(&RegistryFile::demo(), 5);
        let mut file = RegistryFile::demo();
        file.clients.extend(extra.clients);
        file.subscriptions.extend(extra.subscriptions);
        let registry = Registry::from_file(&file).unwrap();
        for kind in Invalid::ALL {
            let o = generator.invalid(kind);
            assert!(o.body.len() < SQS_MAX_BYTES, "{kind:?} too large");
            let got = classify(&o.body, "m", &registry).reason();
            assert_eq!(got, Some(kind.reason()), "{kind:?}: {}", &o.body[..o.body.len().min(300)]);
        }
        for _ in 0..2_000 {
            let o = generator.next_event();
            let got = classify(&o.body, "m", &registry).reason();
            match o.expect {
                Expect::Stored | Expect::Duplicate => assert_eq!(got, None, "{}", o.body),
                Expect::Rejected(reason) => assert_eq!(got, Some(reason), "{}", &o.body[..o.body.len().min(300)]),
            }
        }
        for o in generator.legacy_round() {
            let want = match o.expect {
                Expect::Rejected(r) => Some(r),
                _ => None,
            };
            assert_eq!(classify(&o.body, "m", &registry).reason(), want);
        }
    }
}
