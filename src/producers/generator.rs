//! What the producers send: valid events from templates across tenants, the kinds of
//! bad input the processor must survive, producer-side duplicates, or exactly the
//! original producers' messages (`--legacy`).

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::manifest::Expect;
use super::templates::{render, EventsFile};
use crate::validation::Reason;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, RegistryFile};
    use crate::validation::classify;

    #[test]
    fn every_generated_event_classifies_as_expected() {
        let mut generator =
            Generator::new(EventsFile::demo(), Mix { invalid_ratio: 0.3, duplicate_ratio: 0.1 }, Some(5), Some(7));
        let extra = crate::producers::tenants(&RegistryFile::demo(), 5);
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
