//! Event templates (`deployments/events.json`): realistic payloads per event type,
//! with placeholders filled in fresh for every event.

use std::path::Path;

use anyhow::Context;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Deserialize)]
pub struct EventsFile {
    #[serde(default)]
    pub description: String,
    /// A registered client and event type that are not subscribed to each other.
    pub not_subscribed: Target,
    pub templates: Vec<Template>,
    /// The original producers' three messages, sent as they were.
    #[serde(default)]
    pub legacy: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    pub client_id: String,
    pub event_type: String,
    pub version: i32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Template {
    pub event_type: String,
    pub version: i32,
    /// Relative frequency among templates.
    #[serde(default = "one")]
    pub weight: u32,
    /// Clients subscribed to this event type.
    pub clients: Vec<String>,
    pub payload: Value,
}

fn one() -> u32 {
    1
}

impl EventsFile {
    pub fn read(path: &Path) -> anyhow::Result<EventsFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: EventsFile =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid events file", path.display()))?;
        anyhow::ensure!(!file.templates.is_empty(), "{}: no templates", path.display());
        anyhow::ensure!(
            file.templates.iter().all(|t| !t.clients.is_empty() && t.weight > 0),
            "{}: every template needs a client and a weight > 0",
            path.display()
        );
        Ok(file)
    }

    /// The file shipped in `deployments/events.json`.
    pub fn demo() -> EventsFile {
        serde_json::from_str(include_str!("../../deployments/events.json")).expect("deployments/events.json is valid")
    }

    /// A template picked at random by weight.
    pub fn pick(&self, rng: &mut impl Rng) -> &Template {
        self.templates.choose_weighted(rng, |t| t.weight).expect("templates are non-empty with positive weights")
    }
}

/// Fills every placeholder of a template value.
pub fn render(template: &Value, rng: &mut impl Rng, seq: u64) -> Value {
    match template {
        Value::String(s) => render_string(s, rng, seq),
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, rng, seq)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), render(v, rng, seq))).collect::<Map<_, _>>())
        }
        other => other.clone(),
    }
}

fn render_string(s: &str, rng: &mut impl Rng, seq: u64) -> Value {
    // A whole-string placeholder keeps its type (numbers stay numbers).
    if let Some(inner) = s.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        if !inner.contains("{{") {
            return generate(inner, rng, seq);
        }
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else { break };
        out.push_str(&rest[..start]);
        match generate(&rest[start + 2..start + end], rng, seq) {
            Value::String(v) => out.push_str(&v),
            v => out.push_str(&v.to_string()),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Value::String(out)
}

fn generate(spec: &str, rng: &mut impl Rng, seq: u64) -> Value {
    let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
    let range = |args: &str| -> (f64, f64) {
        let (a, b) = args.split_once(':').unwrap_or(("0", "100"));
        (a.parse().unwrap_or(0.0), b.parse().unwrap_or(100.0))
    };
    match name {
        "uuid" => Value::String(uuid::Uuid::new_v4().to_string()),
        "now" => Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "seq" => Value::from(seq),
        "int" => {
            let (a, b) = range(args);
            Value::from(rng.random_range(a as i64..=b as i64))
        }
        "float" => {
            let (a, b) = range(args);
            Value::from((rng.random_range(a..b) * 100.0).round() / 100.0)
        }
        "choice" => {
            let options: Vec<&str> = args.split('|').collect();
            Value::String(options.choose(rng).copied().unwrap_or_default().to_owned())
        }
        "hex" | "digits" => {
            let n: usize = args.parse().unwrap_or(8);
            let alphabet: &[u8] = if name == "hex" { b"0123456789abcdef" } else { b"0123456789" };
            Value::String((0..n).map(|_| *alphabet.choose(rng).expect("non-empty") as char).collect())
        }
        _ => Value::String(format!("{{{{{spec}}}}}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, RegistryFile};

    #[test]
    fn rendered_demo_templates_pass_their_schemas() {
        let registry = Registry::from_file(&RegistryFile::demo()).unwrap();
        let events = EventsFile::demo();
        let mut rng = rand::rng();
        for template in &events.templates {
            for i in 0..200 {
                let payload = render(&template.payload, &mut rng, i);
                for client in &template.clients {
                    let schema = registry.schema_for(client, &template.event_type, template.version).unwrap();
                    let payload = crate::validation::Payload::from_value(&payload);
                    let errors: Vec<String> =
                        schema.validator.iter_errors(payload.root()).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{} {:?}: {errors:?}", template.event_type, payload.to_value());
                }
            }
        }
        let t = &events.not_subscribed;
        assert_eq!(
            registry.schema_for(&t.client_id, &t.event_type, t.version).err().unwrap().reason,
            crate::validation::Reason::NotSubscribed
        );
    }

    #[test]
    fn placeholders_keep_types_and_interpolate() {
        let mut rng = rand::rng();
        let v = render(&serde_json::json!({"n": "{{int:5:5}}", "s": "a-{{int:5:5}}-{{choice:x}}"}), &mut rng, 0);
        assert_eq!(v, serde_json::json!({"n": 5, "s": "a-5-x"}));
    }
}
