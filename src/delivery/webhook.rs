//! One webhook request: the signed `POST` of an event to a consumer's endpoint, and
//! what came of it. Also where endpoints may point: only `http`/`https`, and only to
//! public addresses unless `SENDER_ALLOWED_NETWORKS` lists the private network
//! (checked on the resolved address of every connection, against request forgery).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::signature::{sign, Secret};

/// Most of a response body kept with a failed attempt.
pub const SNIPPET_BYTES: usize = 1024;

/// Networks consumers may live in besides the public internet, e.g.
/// `127.0.0.0/8,::1/128,10.0.0.0/8`. Without any, loopback, private, link-local and
/// other non-public addresses are refused.
#[derive(Debug, Clone, Default)]
pub struct Networks(Vec<(IpAddr, u8)>);

impl FromStr for Networks {
    type Err = String;

    fn from_str(s: &str) -> Result<Networks, String> {
        let mut networks = Vec::new();
        for cidr in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let bad = || format!("expected CIDR networks such as 127.0.0.0/8,::1/128, got '{cidr}'");
            let (ip, bits) = match cidr.split_once('/') {
                Some((ip, bits)) => (ip.parse::<IpAddr>().map_err(|_| bad())?, bits.parse::<u8>().map_err(|_| bad())?),
                None => {
                    let ip = cidr.parse::<IpAddr>().map_err(|_| bad())?;
                    (ip, if ip.is_ipv4() { 32 } else { 128 })
                }
            };
            if bits > if ip.is_ipv4() { 32 } else { 128 } {
                return Err(bad());
            }
            networks.push((ip, bits));
        }
        Ok(Networks(networks))
    }
}

impl Networks {
    /// Whether a consumer may be reached at `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        is_public(ip) || self.0.iter().any(|(net, bits)| contains(*net, *bits, ip))
    }
}

fn contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Routable on the public internet (not loopback, private, link-local, shared,
/// multicast, documentation or unspecified).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves host names and keeps only the addresses [`Networks`] allows, so a name
/// that points inside cannot be used to reach what the setting keeps out.
#[derive(Clone)]
struct GuardedResolver(Arc<Networks>);

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let networks = self.0.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| networks.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{} resolves to no address allowed by SENDER_ALLOWED_NETWORKS", name.as_str()),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The sender's HTTP client: pooled keep-alive connections, http and https.
#[derive(Clone)]
pub struct Poster {
    client: Client<Https, Full<Bytes>>,
    networks: Arc<Networks>,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx within the timeout.
    Delivered { status: u16 },
    /// `410 Gone`: the consumer asks never to be called again.
    Gone,
    /// Anything else; `status` is `None` when no response came.
    Failed { status: Option<u16>, error: String, snippet: Option<String>, retry_after: Option<Duration> },
}

impl Attempt {
    pub fn status(&self) -> Option<u16> {
        match self {
            Attempt::Delivered { status } => Some(*status),
            Attempt::Gone => Some(410),
            Attempt::Failed { status, .. } => *status,
        }
    }

    /// A label for metrics: `2xx`, `4xx`, `5xx`, `timeout`, `error`.
    pub fn class(&self) -> &'static str {
        match self {
            Attempt::Delivered { .. } => "2xx",
            Attempt::Gone => "4xx",
            Attempt::Failed { status: Some(s), .. } if *s >= 500 => "5xx",
            Attempt::Failed { status: Some(_), .. } => "4xx",
            Attempt::Failed { error, .. } if error.starts_with("timed out") => "timeout",
            Attempt::Failed { .. } => "error",
        }
    }
}

impl Poster {
    pub fn new(networks: Networks) -> anyhow::Result<Poster> {
        let networks = Arc::new(networks);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver(networks.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
            Ok(builder) => builder,
            Err(e) => {
                tracing::warn!(error = %e, "no system CA certificates: https endpoints will fail verification");
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(Poster { client, networks })
    }

    /// Posts `body` to `endpoint`, signed for `webhook_id` now, within `timeout`.
    pub async fn post(
        &self,
        endpoint: &str,
        secret: &Secret,
        webhook_id: &str,
        body: &Bytes,
        timeout: Duration,
    ) -> Attempt {
        let failed = |error: String| Attempt::Failed { status: None, error, snippet: None, retry_after: None };
        let uri: http::Uri = match endpoint.parse() {
            Ok(uri) => uri,
            Err(_) => return failed("endpoint is not a URL".into()),
        };
        // Addresses written as IPs are not resolved, so they are checked here.
        if let Some(ip) = uri.host().and_then(|h| h.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().ok()) {
            if !self.networks.allows(ip) {
                return failed(format!("{ip} is not in SENDER_ALLOWED_NETWORKS"));
            }
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(secret, webhook_id, timestamp, body);
        self.send(uri, webhook_id, timestamp, &signature, body, timeout).await
    }

    /// Posts a body already signed (the benchmark's ceiling signs ahead of time).
    pub async fn send(
        &self,
        uri: http::Uri,
        webhook_id: &str,
        timestamp: i64,
        signature: &str,
        body: &Bytes,
        timeout: Duration,
    ) -> Attempt {
        let failed = |error: String| Attempt::Failed { status: None, error, snippet: None, retry_after: None };
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("event-processor-sender/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => return failed(format!("cannot build the request: {e}")),
        };
        let started = Instant::now();
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| describe(&e))?;
            let status = response.status();
            let retry_after = retry_after(response.headers(), status);
            // Read (a bounded part of) the body: it frees the connection for reuse,
            // and a failure's snippet helps whoever debugs the endpoint.
            let bytes = Limited::new(response.into_body(), 64 * 1024).collect().await.map(|c| c.to_bytes()).ok();
            Ok::<_, String>((status, retry_after, bytes))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => failed(format!("timed out after {} ms", started.elapsed().as_millis())),
            Ok(Err(e)) => failed(e),
            Ok(Ok((status, _, _))) if status.is_success() => Attempt::Delivered { status: status.as_u16() },
            Ok(Ok((StatusCode::GONE, _, _))) => Attempt::Gone,
            Ok(Ok((status, retry_after, bytes))) => Attempt::Failed {
                status: Some(status.as_u16()),
                error: format!("HTTP {status}"),
                snippet: bytes.map(|b| {
                    let cut = &b[..b.len().min(SNIPPET_BYTES)];
                    String::from_utf8_lossy(cut).into_owned()
                }),
                retry_after,
            },
        }
    }
}

/// `Retry-After` in seconds, on 429 and 503 only (an HTTP date is not honoured).
fn retry_after(headers: &http::HeaderMap, status: StatusCode) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let secs: u64 = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// A client error with its causes (connection refused, refused address, TLS), which
/// its `Display` leaves out. URLs and headers are not part of it: no secret leaks.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_a_network_is_allowed() {
        let none = Networks::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!none.allows(ip.parse().unwrap()), "{ip}");
        }
        assert!(none.allows("93.184.216.34".parse().unwrap()));
        assert!(none.allows("2606:4700::1111".parse().unwrap()));
        let local: Networks = "127.0.0.0/8, ::1/128".parse().unwrap();
        assert!(local.allows("127.0.0.1".parse().unwrap()));
        assert!(local.allows("::1".parse().unwrap()));
        assert!(local.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!local.allows("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(bad.parse::<Networks>().is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers, StatusCode::TOO_MANY_REQUESTS), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers, StatusCode::SERVICE_UNAVAILABLE), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers, StatusCode::INTERNAL_SERVER_ERROR), None);
    }
}
