//! Fake webhook consumers, the service behind `cargo run --bin consumers`, for local
//! runs and tests of delivery.
//!
//! Each named consumer is an endpoint `POST /{name}` that checks the Standard Webhooks
//! signature with its own secret, answers the way it is told to (`behaviour.rs`),
//! and appends each accepted delivery to a record file (`record.rs`) *before*
//! answering 2xx, so the file never misses a delivery the sender counts as done.
//!
//! | Route | Purpose |
//! |---|---|
//! | `POST /{name}` | a delivery: 404 unknown consumer, 401 bad signature, else the behaviour's answer (204 when accepted) |
//! | `GET /{name}/received` | `{"received": N, "rejected_signature": M}` |
//! | `GET /_control/{name}` | the current behaviour and all counters |
//! | `PUT /_control/{name}` | change the behaviour; JSON, every field optional: `fail_ratio`, `fail_status`, `delay_ms`, `status_for_secs` (`{"status":503,"secs":30}`), `retry_after_secs`, `gone` |
//! | `GET /healthz` | `ok` |

mod behaviour;
mod record;
mod routes;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::delivery::signature::{Secret, SECRET_PREFIX};
use behaviour::Behaviour;
use record::Recorder;
use routes::{App, Consumer};

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the binary binds; [`serve`] itself takes a bound listener, so tests can
    /// pass one on port 0.
    pub addr: SocketAddr,
    /// Each consumer's name (its path) and signing secret.
    pub consumers: Vec<(String, Secret)>,
    /// Where to append one JSON line per accepted delivery, if anywhere.
    pub record: Option<PathBuf>,
    /// Largest accepted distance between `webhook-timestamp` and now, in seconds;
    /// the Standard Webhooks default is 300.
    pub tolerance_secs: i64,
    /// Every consumer's starting share of random 500 answers, from 0 to 1.
    pub fail_ratio: f64,
    /// Every consumer's starting delay before answering, in milliseconds.
    pub delay_ms: u64,
}

/// Reads a `NAME=whsec_...` argument. Errors never quote the secret, and quote the
/// name only once it is known to be a name, since a mistyped argument may be a bare
/// secret.
pub fn parse_consumer(s: &str) -> Result<(String, Secret), String> {
    const FORMAT: &str = "expected NAME=whsec_... (a consumer's name and its signing secret)";
    let (name, secret) = match s.split_once('=') {
        // Base64 padding is `=`: a bare secret split at its padding is no NAME=SECRET.
        Some((name, secret)) if !secret.trim().is_empty() && !secret.starts_with('=') => (name.trim(), secret),
        _ => return Err(FORMAT.to_owned()),
    };
    check_name(name).map_err(|e| format!("{FORMAT}: {e}"))?;
    let secret = Secret::parse(secret).map_err(|e| format!("consumer '{name}': {e}"))?;
    Ok((name.to_owned(), secret))
}

/// Names become paths, so they are restricted to what needs no escaping and cannot
/// shadow the service's own routes. The error does not quote the name.
fn check_name(name: &str) -> Result<(), &'static str> {
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if name.is_empty() || name.len() > 128 || !plain || name.bytes().all(|b| b == b'.') {
        Err("a NAME is 1 to 128 letters, digits, '-', '_' or '.' (not only dots)")
    } else if name.starts_with('_') || name.starts_with(SECRET_PREFIX) || name == "healthz" {
        Err("a NAME may not start with '_' or 'whsec_', nor be 'healthz'")
    } else {
        Ok(())
    }
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight (a
/// delayed answer is cut short with 503).
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let initial = Behaviour::new(settings.fail_ratio, settings.delay_ms).map_err(anyhow::Error::msg)?;
    let mut consumers = HashMap::new();
    for (position, (name, secret)) in settings.consumers.into_iter().enumerate() {
        check_name(&name).map_err(|e| anyhow::anyhow!("consumer #{}: {e}", position + 1))?;
        if consumers.insert(name.clone(), Consumer::new(secret, initial.clone())).is_some() {
            anyhow::bail!("consumer '{name}' is configured twice");
        }
    }
    if consumers.is_empty() {
        tracing::warn!("no consumers configured: every delivery will get 404");
    }
    let recorder = settings.record.as_deref().map(Recorder::open).transpose()?;
    let names = {
        let mut names: Vec<&str> = consumers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.join(",")
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        consumers = %names,
        record = ?settings.record,
        "fake consumers listening"
    );
    let tolerance_secs = settings.tolerance_secs;
    let app = Arc::new(App { consumers, recorder, tolerance_secs, shutdown: shutdown.clone() });
    axum::serve(listener, routes::router(app)).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

/// The push consumers of a registry file that carry a secret, each served at the last
/// path segment of its endpoint (`http://127.0.0.1:9300/audit` is `audit`). Pull
/// consumers have no endpoint to serve: they read through the API.
pub fn from_registry(path: &std::path::Path) -> anyhow::Result<Vec<(String, Secret)>> {
    let file = crate::registry::RegistryFile::read(path)?;
    let mut found = Vec::new();
    for c in &file.consumers {
        if c.kind == crate::delivery::consumer::Kind::Pull {
            continue;
        }
        let Some(secret) = &c.secret else { continue };
        let name = c.endpoint.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
        let secret = Secret::parse(secret)
            .map_err(|e| anyhow::anyhow!("{}: consumer '{}': secret: {e}", path.display(), c.name))?;
        found.push((name.to_owned(), secret));
    }
    if found.is_empty() {
        anyhow::bail!("{}: no consumer with a secret (export with --with-secrets)", path.display());
    }
    Ok(found)
}
