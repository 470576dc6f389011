//! Sending through the platform API instead of SQS (`producers --api-url`): the same
//! generated events, posted to `POST /v1/events` one by one or to `/v1/events/batch`.
//! Events the API refuses never reach SQS; each refusal is checked against what the
//! generator expected (the API must judge exactly as the processor would).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::generator::Outgoing;
use super::manifest::{Entry, Expect};

/// Where and how to post.
#[derive(Clone)]
pub struct ApiSink {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    authorization: String,
    /// Up to 10 events per `POST /v1/events/batch` instead of one `POST /v1/events` each.
    pub batch: bool,
}

/// One event's outcome at the API.
pub enum Posted {
    /// 202: on the queue, under this SQS message id.
    Accepted(Entry),
    /// Refused with a rejection reason; `matched` when it is the one expected.
    Refused { reason: String, matched: bool },
    /// Anything else (network, 5xx, an unexpected answer): counted as failed.
    Failed(String),
}

impl ApiSink {
    pub fn new(base: &str, key: &str, batch: bool) -> ApiSink {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        ApiSink {
            client: Client::builder(TokioExecutor::new()).build(http),
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {key}"),
            batch,
        }
    }

    /// Posts `batch`; one outcome per event, in order.
    pub async fn post(&self, batch: &[Outgoing]) -> Vec<Posted> {
        // Bodies that are not JSON cannot be entries of a JSON batch: they go alone.
        let batchable =
            self.batch && batch.iter().all(|o| serde_json::from_str::<&serde_json::value::RawValue>(&o.body).is_ok());
        if !batchable {
            let mut out = Vec::with_capacity(batch.len());
            for outgoing in batch {
                out.push(match self.call("/v1/events", outgoing.body.clone()).await {
                    Ok((status, answer)) => judge(outgoing, status, &answer),
                    Err(e) => Posted::Failed(e),
                });
            }
            return out;
        }
        let body = format!("{{\"entries\":[{}]}}", batch.iter().map(|o| o.body.as_str()).collect::<Vec<_>>().join(","));
        match self.call("/v1/events/batch", body).await {
            Ok((200, answer)) => {
                let results = answer["entries"].as_array().cloned().unwrap_or_default();
                batch
                    .iter()
                    .enumerate()
                    .map(|(i, outgoing)| match results.get(i) {
                        Some(r) if r.get("error").is_some() => judge(outgoing, 400, r),
                        Some(r) => judge(outgoing, 202, r),
                        None => Posted::Failed("no result for this entry".into()),
                    })
                    .collect()
            }
            Ok((status, answer)) => batch.iter().map(|_| Posted::Failed(format!("HTTP {status}: {answer}"))).collect(),
            Err(e) => batch.iter().map(|_| Posted::Failed(e.clone())).collect(),
        }
    }

    async fn call(&self, path: &str, body: String) -> Result<(u16, Value), String> {
        let request = http::Request::post(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
        };
        tokio::time::timeout(Duration::from_secs(30), exchange).await.map_err(|_| "timed out".to_owned())?
    }
}

/// An answer for one event, against what the generator expected of it.
fn judge(outgoing: &Outgoing, status: u16, answer: &Value) -> Posted {
    match status {
        202 => match answer["message_id"].as_str() {
            Some(message_id) => Posted::Accepted(Entry::acknowledged(
                outgoing,
                message_id.to_owned(),
                answer["event_id"].as_str().map(str::to_owned),
            )),
            None => Posted::Failed(format!("202 without a message id: {answer}")),
        },
        400 | 413 => {
            let reason = answer["error"]["code"].as_str().unwrap_or("?").to_owned();
            let matched = match outgoing.expect {
                Expect::Rejected(r) => r.code() == reason,
                // Too large for SQS is refused before classification.
                _ => false,
            } || (status == 413 && outgoing.kind == "oversized");
            Posted::Refused { reason, matched }
        }
        other => Posted::Failed(format!("HTTP {other}: {answer}")),
    }
}
