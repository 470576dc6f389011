//! The fake consumers over real HTTP on a local port, plus argument parsing. The client
//! is a few lines of std `TcpStream`, so the tests need no HTTP client crate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{parse_consumer, serve, Settings};
use crate::delivery::signature::{self, Secret};

/// The Standard Webhooks test secret, as consumer `shop`'s.
const SHOP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running service on its own runtime, so the test thread can make blocking calls.
struct Service {
    addr: SocketAddr,
    record: PathBuf,
    shop: Secret,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Service {
    /// Consumers `shop` (the spec's test secret) and `crm` (a fresh one).
    fn start() -> Service {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a free port");
        let addr = listener.local_addr().expect("the bound address");
        let record = std::env::temp_dir().join(format!("consumers-test-{}.jsonl", uuid::Uuid::new_v4()));
        let shop = parse_consumer(&format!("shop={SHOP_SECRET}")).expect("a valid consumer");
        let crm = ("crm".to_owned(), Secret::parse(&Secret::generate()).expect("a generated secret"));
        let settings = Settings {
            addr,
            consumers: vec![shop.clone(), crm],
            record: Some(record.clone()),
            tolerance_secs: 300,
            fail_ratio: 0.0,
            delay_ms: 0,
        };
        let stop = CancellationToken::new();
        let task = runtime.spawn(serve(listener, settings, stop.clone()));
        Service { addr, record, shop: shop.1, stop, task, runtime }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
        head.push_str(&format!("content-length: {}\r\n", body.len()));
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send the head");
        stream.write_all(body).expect("send the body");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read the response");
        Reply::parse(&raw)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    fn control(&self, consumer: &str, body: &str) -> Reply {
        self.request("PUT", &format!("/_control/{consumer}"), &[], body.as_bytes())
    }

    /// A delivery to `consumer` signed with `secret`, stamped `age_secs` ago.
    fn deliver_signed(&self, consumer: &str, secret: &Secret, id: &str, age_secs: i64, body: &Value) -> Reply {
        let body = body.to_string();
        let timestamp = chrono::Utc::now().timestamp() - age_secs;
        let headers = [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature::sign(secret, id, timestamp, body.as_bytes())),
        ];
        self.request("POST", &format!("/{consumer}"), &headers, body.as_bytes())
    }

    /// A correctly signed delivery to `shop`.
    fn deliver(&self, id: &str, body: &Value) -> Reply {
        self.deliver_signed("shop", &self.shop, id, 0, body)
    }

    fn recorded(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.record).expect("the record file exists from startup");
        text.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    }

    /// Stops the service; it must end cleanly.
    fn stop(self) {
        let Service { record, stop, task, runtime, .. } = self;
        stop.cancel();
        let ended = runtime.block_on(async move { tokio::time::timeout(Duration::from_secs(10), task).await });
        let _ = std::fs::remove_file(&record);
        ended.expect("stops promptly").expect("does not panic").expect("serves without error");
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn parse(raw: &str) -> Reply {
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        let mut lines = head.lines();
        let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|code| code.parse().ok());
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Reply { status: status.expect("a status line"), headers, body: body.to_owned() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

fn order(event_id: &str) -> Value {
    json!({"client_id": "client-1", "event_id": event_id, "event_type": "order.created", "data": {"total": 12}})
}

#[test]
fn a_signed_delivery_is_recorded_then_acknowledged() {
    let service = Service::start();
    let health = service.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    assert_eq!(service.deliver("msg_1", &order("e-1")).status, 204);
    assert_eq!(service.deliver("msg_2", &json!({"unrelated": true})).status, 204);

    let lines = service.recorded();
    assert_eq!(lines.len(), 2);
    let first = &lines[0];
    assert_eq!(first["consumer"], "shop");
    assert_eq!(first["webhook_id"], "msg_1");
    assert_eq!(first["client_id"], "client-1");
    assert_eq!(first["event_id"], "e-1");
    assert_eq!(first["event_type"], "order.created");
    let received_at = first["received_at"].as_str().expect("a timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(received_at).is_ok(), "{received_at}");
    assert!(received_at.ends_with('Z') && received_at.len() == "2026-01-01T00:00:00.000Z".len(), "{received_at}");
    assert_eq!(lines[1]["event_id"], Value::Null);

    assert_eq!(service.get("/shop/received").json(), json!({"received": 2, "rejected_signature": 0}));
    assert_eq!(service.get("/crm/received").json(), json!({"received": 0, "rejected_signature": 0}));
    service.stop();
}

#[test]
fn bad_signatures_and_unknown_consumers_are_refused() {
    let service = Service::start();
    let unknown = service.deliver_signed("nobody", &service.shop, "msg_1", 0, &order("e-1"));
    assert_eq!((unknown.status, unknown.json()), (404, json!({"error": "unknown_consumer"})));

    let other_key = Secret::parse(&Secret::generate()).unwrap();
    let wrong = service.deliver_signed("shop", &other_key, "msg_2", 0, &order("e-2"));
    assert_eq!((wrong.status, wrong.json()), (401, json!({"error": "no_matching_signature"})));
    let stale = service.deliver_signed("shop", &service.shop, "msg_3", 1_000, &order("e-3"));
    assert_eq!((stale.status, stale.json()), (401, json!({"error": "stale_timestamp"})));
    let unsigned = service.request("POST", "/shop", &[], order("e-4").to_string().as_bytes());
    assert_eq!((unsigned.status, unsigned.json()), (401, json!({"error": "missing_header"})));
    let not_json = service.request("POST", "/shop", &[], b"{not json");
    assert_eq!(not_json.status, 401, "the signature is checked before the body");

    assert_eq!(service.get("/shop/received").json(), json!({"received": 0, "rejected_signature": 4}));
    assert!(service.recorded().is_empty());
    service.stop();
}

#[test]
fn control_changes_how_a_consumer_answers() {
    let service = Service::start();
    let outage = service.control("shop", r#"{"status_for_secs": {"status": 503, "secs": 30}, "retry_after_secs": 7}"#);
    assert_eq!(outage.status, 200);
    assert_eq!(outage.json()["behaviour"]["status_for_secs"]["status"], 503);
    let refused = service.deliver("msg_1", &order("e-1"));
    assert_eq!((refused.status, refused.header("retry-after")), (503, Some("7")));
    assert_eq!(refused.json(), json!({"error": "outage"}));

    service.control("shop", r#"{"status_for_secs": {"status": 503, "secs": 0}, "gone": true}"#);
    let gone = service.deliver("msg_1", &order("e-1"));
    assert_eq!((gone.status, gone.header("retry-after")), (410, None));

    service.control("shop", r#"{"gone": false, "fail_ratio": 1, "fail_status": 429}"#);
    let limited = service.deliver("msg_1", &order("e-1"));
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("7")));

    service.control("shop", r#"{"fail_ratio": 0, "delay_ms": 50}"#);
    assert_eq!(service.deliver("msg_1", &order("e-1")).status, 204);

    for bad in [r#"{"fail_ratio": 3}"#, r#"{"fail_status": 204}"#, r#"{"gone": "yes"}"#, r#"{"typo": 1}"#, "not json"] {
        let reply = service.control("shop", bad);
        assert_eq!((reply.status, reply.json()["error"].as_str()), (400, Some("invalid_control")), "{bad}");
    }
    assert_eq!(service.control("nobody", "{}").status, 404);
    // The crm consumer was never touched.
    assert_eq!(service.get("/_control/crm").json()["behaviour"]["fail_ratio"], 0.0);

    let report = service.get("/_control/shop").json();
    assert_eq!(report["counters"]["refused"], 3);
    assert_eq!(report["counters"]["received"], 1);
    assert_eq!(report["behaviour"]["delay_ms"], 50);
    assert_eq!(service.recorded().len(), 1, "only the accepted delivery is recorded");
    service.stop();
}

#[test]
fn consumer_arguments_parse_without_echoing_secrets() {
    let (name, secret) = parse_consumer(&format!("shop={SHOP_SECRET}")).unwrap();
    assert_eq!(name, "shop");
    let signed = signature::sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
    assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    let encoded = SHOP_SECRET.strip_prefix("whsec_").unwrap();
    let padded_one = STANDARD.encode([9u8; 32]);
    let padded_two = STANDARD.encode([9u8; 31]);
    let leaks = [
        (SHOP_SECRET.to_owned(), encoded),
        (encoded.to_owned(), encoded),
        (padded_one.clone(), padded_one.trim_end_matches('=')),
        (padded_two.clone(), padded_two.trim_end_matches('=')),
        (format!("{SHOP_SECRET}={SHOP_SECRET}"), encoded),
        ("shop=whsec_tooShortKey".to_owned(), "tooShortKey"),
    ];
    for (argument, secret_text) in &leaks {
        let error = parse_consumer(argument).expect_err(argument);
        assert!(!error.contains(secret_text), "{error}");
    }
    for bad_name in ["_control", "healthz", "a b", "", "x/y", "..", "."] {
        assert!(parse_consumer(&format!("{bad_name}={SHOP_SECRET}")).is_err(), "{bad_name}");
    }
    assert!(parse_consumer(&format!("crm-2_eu={SHOP_SECRET}")).is_ok());
    assert!(parse_consumer(&format!("billing.v2={SHOP_SECRET}")).is_ok(), "registry names may hold dots");
}

#[test]
fn a_registry_export_serves_its_push_consumers_only() {
    // An export of a database where the README's examples ran: a pull consumer has no
    // endpoint, so it must not become a (nameless) route.
    let export = json!({"consumers": [
        {"client": "client-1", "name": "audit", "endpoint": "http://127.0.0.1:9300/audit",
         "secret": SHOP_SECRET, "event_types": ["user-app"]},
        {"client": "client-1", "name": "readme-1", "kind": "pull", "endpoint": "",
         "secret": SHOP_SECRET, "event_types": ["user-app"]},
    ]});
    let path = std::env::temp_dir().join(format!("registry-export-{}.json", std::process::id()));
    std::fs::write(&path, export.to_string()).unwrap();
    let found = super::from_registry(&path);
    std::fs::remove_file(&path).unwrap();
    let names: Vec<String> = found.unwrap().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["audit"]);
}
