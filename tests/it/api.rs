//! The platform API over real HTTP, PostgreSQL and LocalStack: every endpoint asks
//! for a key of the right role and tenant; registry changes answer with the codes
//! the contract names; ingest judges bodies exactly as the processor does and puts
//! accepted ones on the queue unchanged; pull consumers share events between members
//! and move their cursor over what was acknowledged.

use std::collections::HashSet;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use event_processor::api::{self, AdminKey, ApiContext, Settings};
use event_processor::producers::generator::SQS_MAX_BYTES;
use event_processor::telemetry::endpoint;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::TestEnv;

const ADMIN: &str = "admin-key-for-tests-0123456789abcdef";

/// One recorder for the whole test process (it is global).
static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The API, served in this process on a free port.
struct Api {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: CancellationToken,
}

impl Api {
    async fn start(env: &TestEnv) -> Api {
        let settings = Settings {
            admin_key: AdminKey::new(ADMIN).unwrap(),
            request_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(10),
        };
        let metrics = METRICS.get_or_init(|| endpoint::install_recorder().expect("metrics recorder")).clone();
        let ctx = ApiContext::new(env.store.clone(), env.queue.clone(), settings, Some(metrics)).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(api::serve(listener, ctx, stop.clone()));
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Api { base, client, stop }
    }

    /// A request with an optional key and JSON body: the status and the JSON answer
    /// (`null` when empty, a string when not JSON).
    async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, key.map(|k| format!("Bearer {k}")), body).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        authorization: Option<String>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = self.client.request(request.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    /// A new key (admin): `epk_...`.
    async fn key(&self, role: &str, scope: &str) -> String {
        let (status, body) =
            self.call(Method::POST, "/v1/keys", Some(ADMIN), Some(json!({"role": role, "scope": scope}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// A valid user-app v2 event for client-1 (user-app belongs to the `identity` producer).
fn user_event(event_id: &str) -> Value {
    json!({
        "event_id": event_id,
        "client_id": "client-1",
        "event_type": "user-app",
        "version": 2,
        "payload": {"user_id": "usr-0123abcd", "action": "login", "at": "2026-11-22T10:00:00Z"}
    })
}

/// Stores `n` user-app v1 events for `client` directly, in one transaction.
async fn store_events(env: &TestEnv, client: &str, prefix: &str, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    env.store
        .pool()
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO message (client_id, event_id, event_type, version, payload, received_at, sqs_message_id)
             SELECT $1, id, 'user-app', 1, to_jsonb('hello ' || id), now(), 'sqs-' || id FROM UNNEST($2::text[]) AS id",
            &[&client, &ids],
        )
        .await
        .unwrap();
}

fn positions(body: &Value) -> Vec<String> {
    body["events"].as_array().unwrap().iter().map(|e| e["position"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_asks_for_a_key_of_the_right_role_and_tenant() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let other_client = api.key("client", "client-2").await;
    let producer = api.key("producer", "identity").await;
    // The id of a real key with the wrong secret.
    let wrong_secret = format!("{}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &other_client[..16]);
    let c1 = "/v1/clients/client-1";
    let consumer = "/v1/clients/client-1/consumers/reader";
    // The resources exist, so a wrong answer would be a leak or a change, not a miss.
    let reader = json!({"name": "reader", "kind": "pull", "event_types": ["user-app"], "start": "beginning"});
    assert_eq!(
        api.call(Method::POST, "/v1/clients/client-1/consumers", Some(ADMIN), Some(reader)).await.0.as_u16(),
        201
    );
    store_events(&env, "client-1", "e", 1).await;
    let e1 = "e-00000";
    use Method as M;
    // (method, path, body, status for client-2's key, status for the identity producer's key)
    let table: Vec<(Method, String, Option<Value>, u16, u16)> = vec![
        (M::POST, "/v1/keys".into(), Some(json!({"role": "client", "scope": "client-1"})), 403, 403),
        (M::GET, "/v1/keys".into(), None, 403, 403),
        (M::DELETE, "/v1/keys/abcdefabcdef".into(), None, 403, 403),
        (M::POST, "/v1/clients".into(), Some(json!({"id": "client-9"})), 403, 403),
        (M::GET, "/v1/clients".into(), None, 200, 403),
        (M::GET, c1.into(), None, 404, 403),
        (M::DELETE, c1.into(), None, 403, 403),
        (M::GET, format!("{c1}/subscriptions"), None, 404, 403),
        (M::PUT, format!("{c1}/subscriptions/user-app"), None, 404, 403),
        (M::DELETE, format!("{c1}/subscriptions/user-app"), None, 404, 403),
        (M::GET, "/v1/producers".into(), None, 403, 200),
        (M::GET, "/v1/producers/payments".into(), None, 403, 404),
        (M::PUT, "/v1/producers/payments".into(), Some(json!({"name": "x", "version": 9})), 403, 403),
        (M::DELETE, "/v1/producers/payments".into(), None, 403, 403),
        (
            M::POST,
            "/v1/event-types".into(),
            Some(json!({"name": "new-app", "version": 1, "schema": {"type": "string"}, "producer": "payments"})),
            403,
            403,
        ),
        (M::GET, "/v1/event-types".into(), None, 200, 200),
        (M::GET, "/v1/event-types/user-app/1".into(), None, 200, 200),
        (M::DELETE, "/v1/event-types/user-app/1".into(), None, 403, 403),
        (
            M::POST,
            format!("{c1}/consumers"),
            Some(json!({"name": "x", "kind": "pull", "event_types": ["user-app"]})),
            404,
            403,
        ),
        (M::GET, format!("{c1}/consumers"), None, 404, 403),
        (M::GET, consumer.into(), None, 404, 403),
        (M::DELETE, consumer.into(), None, 404, 403),
        (M::POST, format!("{consumer}/pause"), None, 404, 403),
        (M::POST, format!("{consumer}/resume"), None, 404, 403),
        (M::PUT, format!("{consumer}/cursor"), Some(json!({"start": "beginning"})), 404, 403),
        (M::GET, format!("{consumer}/events?wait=0"), None, 404, 403),
        (M::POST, format!("{consumer}/ack"), Some(json!({"positions": ["1.1"]})), 404, 403),
        (M::GET, format!("{c1}/events/{e1}"), None, 404, 403),
        // A name another producer owns cannot be taken over with a new version.
        (
            M::POST,
            "/v1/event-types".into(),
            Some(json!({"name": "transaction-app", "version": 9, "schema": {"type": "object"}})),
            403,
            403,
        ),
        (M::GET, "/v1/registry".into(), None, 403, 403),
        (M::POST, "/v1/events".into(), Some(user_event("auth-1")), 403, 202),
        (M::POST, "/v1/events/batch".into(), Some(json!({"entries": [user_event("auth-2")]})), 403, 200),
    ];
    for (method, path, body, as_other_client, as_producer) in table {
        let what = format!("{method} {path}");
        let unauthenticated = [
            None,
            Some("Bearer".to_owned()),
            Some("Bearer nonsense".to_owned()),
            Some(format!("Basic {ADMIN}")),
            Some(format!("Bearer {wrong_secret}")),
            Some(format!("Bearer {ADMIN}x")),
        ];
        for authorization in unauthenticated {
            let bytes = body.as_ref().map(|b| b.to_string().into_bytes()).unwrap_or_default();
            let (status, answer) = api.raw(method.clone(), &path, authorization.clone(), bytes).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} with {authorization:?}: {answer}");
            assert_eq!(code(&answer), "unauthenticated", "{what}");
        }
        let (status, answer) = api.call(method.clone(), &path, Some(&other_client), body.clone()).await;
        assert_eq!(status.as_u16(), as_other_client, "{what} with client-2's key: {answer}");
        let (status, answer) = api.call(method.clone(), &path, Some(&producer), body.clone()).await;
        assert_eq!(status.as_u16(), as_producer, "{what} with a producer key: {answer}");
        if status.as_u16() >= 400 {
            let expected = if as_producer == 404 { "not_found" } else { "forbidden" };
            assert_eq!(code(&answer), expected, "{what}");
        }
    }
    // Nothing of client-1 changed under the other keys.
    let (status, seen) = api.call(M::GET, consumer, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["state"], "active", "{seen}");
    assert_eq!(env.count("SELECT count(*) FROM pull_lease").await, 0, "nobody leased client-1's events");
    assert_eq!(env.count("SELECT count(*) FROM event_type WHERE version = 9").await, 0);
    let (status, _) = api.call(M::GET, &format!("{c1}/events/{e1}"), Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "the event exists");
    // A client key sees its own client only.
    let (_, clients) = api.call(M::GET, "/v1/clients", Some(&other_client), None).await;
    let ids: Vec<&str> = clients.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["client-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_answer_with_the_contract_codes() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let admin = Some(ADMIN);
    let call = |method: Method, path: &'static str, body: Option<Value>| api.call(method, path, admin, body);

    // Clients.
    let nine = json!({"id": "client-9", "name": "Nine"});
    assert_eq!(call(Method::POST, "/v1/clients", Some(nine.clone())).await.0, StatusCode::CREATED);
    let (status, body) = call(Method::POST, "/v1/clients", Some(nine)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (status, body) = call(Method::GET, "/v1/clients/client-9", None).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::OK, Some("Nine")));
    let (status, body) = call(Method::GET, "/v1/clients/nobody", None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = call(Method::POST, "/v1/clients", Some(json!({"id": ""}))).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
    let (status, body) = call(Method::POST, "/v1/clients", Some(json!({"id": 7}))).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
    let (status, body) = api.raw(Method::POST, "/v1/clients", Some(format!("Bearer {ADMIN}")), b"{".to_vec()).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "malformed_json"));

    // Subscriptions.
    let path = "/v1/clients/client-9/subscriptions/user-app";
    assert_eq!(call(Method::PUT, path, None).await.0, StatusCode::CREATED);
    assert_eq!(call(Method::PUT, path, None).await.0, StatusCode::OK);
    let (status, body) = call(Method::PUT, "/v1/clients/client-9/subscriptions/no-such-app", None).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_event_type"));
    let (_, body) = call(Method::GET, "/v1/clients/client-9/subscriptions", None).await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(call(Method::DELETE, path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(Method::DELETE, path, None).await.0, StatusCode::NOT_FOUND);

    // Event types: created once, the same schema again is fine, another is not.
    let order = json!({"name": "order-app", "version": 1, "producer": "payments", "schema": {"type": "object"}});
    assert_eq!(call(Method::POST, "/v1/event-types", Some(order.clone())).await.0, StatusCode::CREATED);
    assert_eq!(call(Method::POST, "/v1/event-types", Some(order)).await.0, StatusCode::OK);
    let changed = json!({"name": "order-app", "version": 1, "producer": "payments", "schema": {"type": "array"}});
    let (status, body) = call(Method::POST, "/v1/event-types", Some(changed)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "schema_immutable"));
    let invalid = json!({"name": "order-app", "version": 2, "schema": {"type": "no-such-type"}});
    let (status, body) = call(Method::POST, "/v1/event-types", Some(invalid)).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema"));
    let orphan = json!({"name": "order-app", "version": 2, "producer": "nobody", "schema": {}});
    let (status, body) = call(Method::POST, "/v1/event-types", Some(orphan)).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_producer"));
    let (status, body) = call(Method::GET, "/v1/event-types/order-app/1", None).await;
    assert_eq!((status, body["schema"].clone()), (StatusCode::OK, json!({"type": "object"})));
    assert_eq!(call(Method::DELETE, "/v1/event-types/order-app/1", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(Method::GET, "/v1/event-types/order-app/1", None).await.0, StatusCode::NOT_FOUND);
    // A producer key registers for its own producer.
    let payments = api.key("producer", "payments").await;
    let refund = json!({"name": "refund-app", "version": 1, "schema": {"type": "string"}});
    let (status, body) = api.call(Method::POST, "/v1/event-types", Some(&payments), Some(refund)).await;
    assert_eq!((status, body["producer"].as_str()), (StatusCode::CREATED, Some("payments")), "{body}");

    // A client with stored events stays; one without goes, with its keys.
    store_events(&env, "client-2", "kept", 1).await;
    let (status, body) = call(Method::DELETE, "/v1/clients/client-2", None).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let nine_key = api.key("client", "client-9").await;
    assert_eq!(call(Method::DELETE, "/v1/clients/client-9", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(Method::GET, "/v1/clients/client-9", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.call(Method::GET, "/v1/clients", Some(&nine_key), None).await.0, StatusCode::UNAUTHORIZED);

    // The whole registry, as `registry apply` takes it.
    let (status, body) = call(Method::GET, "/v1/registry", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["clients"].as_array().unwrap().iter().any(|c| c["id"] == "client-1"), "{body}");
    assert!(body["event_types"].as_array().unwrap().iter().any(|t| t["name"] == "refund-app"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_version_only_moves_forward() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let put = |version: i32, name: &str| {
        api.call(Method::PUT, "/v1/producers/billing", Some(ADMIN), Some(json!({"name": name, "version": version})))
    };
    assert_eq!(put(1, "Billing").await.0, StatusCode::CREATED);
    let (status, body) = put(1, "Billing again").await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "stale_version"));
    let (status, body) = put(3, "Billing v3").await;
    assert_eq!((status, body["version"].as_i64()), (StatusCode::OK, Some(3)));
    let (status, body) = put(2, "Billing v2").await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "stale_version"));
    let (_, body) = api.call(Method::GET, "/v1/producers/billing", Some(ADMIN), None).await;
    assert_eq!((body["name"].as_str(), body["version"].as_i64()), (Some("Billing v3"), Some(3)));
    let (status, body) = put(0, "zero").await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
    // Demo producers start at version 1; one that owns event types cannot go.
    let identity = json!({"name": "Identity", "version": 1});
    let (status, body) = api.call(Method::PUT, "/v1/producers/identity", Some(ADMIN), Some(identity)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "stale_version"));
    let (status, body) = api.call(Method::DELETE, "/v1/producers/identity", Some(ADMIN), None).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    assert_eq!(api.call(Method::DELETE, "/v1/producers/billing", Some(ADMIN), None).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_registered_once_and_checked() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let key = api.key("client", "client-1").await;
    let key = Some(key.as_str());
    let consumers = "/v1/clients/client-1/consumers";
    let hook = json!({"name": "hook", "endpoint": "http://127.0.0.1:9/hook",
                      "event_types": ["user-app", "transaction-app@2"], "start": "beginning"});
    let (status, body) = api.call(Method::POST, consumers, key, Some(hook.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!((body["consumer"]["kind"].as_str(), body["consumer"]["cursor"].as_str()), (Some("push"), Some("0.0")));
    let (status, body) = api.call(Method::POST, consumers, key, Some(hook)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    for unknown in ["no-such-app", "user-app@9"] {
        let entry = json!({"name": "x", "endpoint": "http://127.0.0.1:9/x", "event_types": [unknown]});
        let (status, body) = api.call(Method::POST, consumers, key, Some(entry)).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_event_type"), "{unknown}");
        assert!(body["error"]["message"].as_str().unwrap().contains(unknown), "{body}");
    }
    let ftp = json!({"name": "ftp", "endpoint": "ftp://example.com/", "event_types": ["user-app"]});
    let (status, body) = api.call(Method::POST, consumers, key, Some(ftp)).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
    let reader = json!({"name": "reader", "kind": "pull", "event_types": ["user-app"]});
    let (status, body) = api.call(Method::POST, consumers, key, Some(reader)).await;
    assert_eq!((status, body["consumer"]["kind"].as_str()), (StatusCode::CREATED, Some("pull")), "{body}");
    assert_eq!(body["consumer"]["endpoint"], "");

    let (_, body) = api.call(Method::GET, consumers, key, None).await;
    let names: Vec<&str> = body.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hook", "reader"]);
    let (_, body) = api.call(Method::POST, &format!("{consumers}/hook/pause"), key, None).await;
    assert_eq!(body["state"], "paused");
    let (_, body) = api.call(Method::POST, &format!("{consumers}/hook/resume"), key, None).await;
    assert_eq!(body["state"], "active");
    let cursor = format!("{consumers}/hook/cursor");
    let (status, body) = api.call(Method::PUT, &cursor, key, Some(json!({"start": "5.6"}))).await;
    assert_eq!((status, body["cursor"].as_str()), (StatusCode::OK, Some("5.6")));
    let (status, body) = api.call(Method::PUT, &cursor, key, Some(json!({"start": "soon"}))).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
    let (status, body) = api.call(Method::GET, &format!("{consumers}/hook/events?wait=0"), key, None).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "not_pull_consumer"));
    assert_eq!(api.call(Method::DELETE, &format!("{consumers}/reader"), key, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.call(Method::GET, &format!("{consumers}/reader"), key, None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_go_on_the_queue_unchanged() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let producer = api.key("producer", "identity").await;
    let body = user_event("ingest-1").to_string();
    let (status, answer) =
        api.raw(Method::POST, "/v1/events", Some(format!("Bearer {producer}")), body.clone().into()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["event_id"], "ingest-1");
    let message_id = answer["message_id"].as_str().unwrap().to_owned();
    // Without an event_id, the SQS message id is the key, as in the processor.
    let legacy = json!({"client_id": "client-1", "event_type": "user-app", "message": "hello"});
    let (status, answer) = api.call(Method::POST, "/v1/events", Some(ADMIN), Some(legacy)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["event_id"], answer["message_id"]);
    let mut received = Vec::new();
    for _ in 0..20 {
        received.extend(env.queue.receive(10, Duration::from_secs(1)).await.unwrap());
        if received.len() >= 2 {
            break;
        }
    }
    let first = received.iter().find(|m| m.message_id == message_id).expect("the event is on the queue");
    assert_eq!(first.body, body, "sent exactly as posted");
    assert_eq!(received.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_with_the_processor_reason() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let cases: Vec<(&str, String)> = vec![
        ("malformed_json", "Hello World".into()),
        ("invalid_envelope", r#"{"client_id":"client-1"}"#.into()),
        ("unknown_client", r#"{"client_id":"nobody","event_type":"user-app","message":"x"}"#.into()),
        ("unknown_event_type", r#"{"client_id":"client-1","event_type":"user-app","version":7,"message":"x"}"#.into()),
        ("not_subscribed", r#"{"client_id":"client-3","event_type":"transaction-app","message":"x"}"#.into()),
        ("schema_violation", r#"{"client_id":"client-1","event_type":"user-app","version":2,"payload":{}}"#.into()),
        ("unstorable", r#"{"client_id":"client-1","event_type":"user-app","message":"a\u0000b"}"#.into()),
    ];
    for (reason, body) in cases {
        let (status, answer) = api.raw(Method::POST, "/v1/events", Some(format!("Bearer {ADMIN}")), body.into()).await;
        assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, reason), "{answer}");
        assert!(answer["error"]["detail"].is_object(), "{answer}");
    }
    let huge = json!({"client_id": "client-1", "event_type": "user-app", "message": "x".repeat(SQS_MAX_BYTES)});
    let (status, answer) = api.call(Method::POST, "/v1/events", Some(ADMIN), Some(huge)).await;
    assert_eq!((status, code(&answer)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    // A producer sends only its own event types.
    let identity = api.key("producer", "identity").await;
    let payment = json!({"client_id": "client-1", "event_type": "transaction-app", "message": "paid"});
    let (status, answer) = api.call(Method::POST, "/v1/events", Some(&identity), Some(payment)).await;
    assert_eq!((status, code(&answer)), (StatusCode::FORBIDDEN, "forbidden"));
    // And a client sends nothing.
    let client = api.key("client", "client-1").await;
    let (status, _) = api.call(Method::POST, "/v1/events", Some(&client), Some(user_event("c-1"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(env.queue.receive(10, Duration::from_secs(1)).await.unwrap().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_entry_in_order() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let invalid = json!({"client_id": "client-1", "event_type": "user-app", "version": 2, "payload": {}});
    let legacy = json!({"event_id": "b-3", "client_id": "client-2", "event_type": "monitor-app", "message": "up"});
    let batch = json!({"entries": [user_event("b-1"), invalid, legacy]});
    let (status, body) = api.call(Method::POST, "/v1/events/batch", Some(ADMIN), Some(batch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["failed_count"], 1);
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["event_id"], "b-1");
    assert!(entries[0]["message_id"].is_string());
    assert_eq!(code(&entries[1]), "schema_violation");
    assert_eq!(entries[2]["event_id"], "b-3");
    let too_many = json!({"entries": (0..101).map(|i| user_event(&format!("m-{i}"))).collect::<Vec<_>>()});
    let (status, body) = api.call(Method::POST, "/v1/events/batch", Some(ADMIN), Some(too_many)).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
    // Twenty-five entries go out in three SQS batches, answered in request order.
    let many: Vec<Value> = (0..25).map(|i| user_event(&format!("many-{i:02}"))).collect();
    let (status, body) = api.call(Method::POST, "/v1/events/batch", Some(ADMIN), Some(json!({"entries": many}))).await;
    assert_eq!((status, body["failed_count"].as_i64()), (StatusCode::OK, Some(0)), "{body}");
    let ids: Vec<&str> = body["entries"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("many-{i:02}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_pull_consumer_share_its_events_and_acks_move_the_cursor() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let key = api.key("client", "client-1").await;
    let key = Some(key.as_str());
    let reader = json!({"name": "reader", "kind": "pull", "event_types": ["user-app"], "start": "beginning"});
    let (status, body) = api.call(Method::POST, "/v1/clients/client-1/consumers", key, Some(reader)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    store_events(&env, "client-1", "pull", 10).await;
    let path = "/v1/clients/client-1/consumers/reader";
    let (_, first) = api.call(Method::GET, &format!("{path}/events?member=m1&limit=5&wait=10"), key, None).await;
    let (_, second) = api.call(Method::GET, &format!("{path}/events?member=m2&limit=10&wait=10"), key, None).await;
    let (m1, m2) = (positions(&first), positions(&second));
    assert_eq!((m1.len(), m2.len()), (5, 5), "{first} {second}");
    let all: HashSet<&String> = m1.iter().chain(&m2).collect();
    assert_eq!(all.len(), 10, "disjoint");
    assert_eq!(first["events"][0]["event"]["event_id"], "pull-00000");
    assert_eq!(first["events"][0]["event"]["payload"], "hello pull-00000");
    let (_, none) = api.call(Method::GET, &format!("{path}/events?member=m3&wait=0"), key, None).await;
    assert!(positions(&none).is_empty(), "everything is leased: {none}");

    // The later half acknowledged first: the cursor waits for the earlier half.
    let (status, body) = api.call(Method::POST, &format!("{path}/ack"), key, Some(json!({"positions": m2}))).await;
    assert_eq!((status, body["acknowledged"].as_i64()), (StatusCode::OK, Some(5)), "{body}");
    assert_eq!(body["cursor"], "0.0");
    let (_, body) = api.call(Method::POST, &format!("{path}/ack"), key, Some(json!({"positions": m1}))).await;
    assert_eq!(body["cursor"].as_str(), Some(m2[4].as_str()), "{body}");
    let (_, consumer) = api.call(Method::GET, path, key, None).await;
    assert_eq!(consumer["cursor"], body["cursor"]);
    let (_, none) = api.call(Method::GET, &format!("{path}/events?member=m1&wait=0"), key, None).await;
    assert!(positions(&none).is_empty(), "{none}");
    let (status, body) = api.call(Method::POST, &format!("{path}/ack"), key, Some(json!({"positions": ["x"]}))).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_events_come_back_after_their_visibility_and_long_polls_wait() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let reader = json!({"name": "reader", "kind": "pull", "event_types": ["user-app@1"], "start": "new"});
    let (status, body) = api.call(Method::POST, "/v1/clients/client-1/consumers", Some(ADMIN), Some(reader)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = "/v1/clients/client-1/consumers/reader/events";

    // A long poll started before the events exist returns them when they arrive.
    let long_poll = format!("{path}?member=m1&visibility=1&wait=10");
    let poll = api.call(Method::GET, &long_poll, Some(ADMIN), None);
    let insert = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store_events(&env, "client-1", "late", 4).await;
    };
    let ((status, first), ()) = tokio::join!(poll, insert);
    assert_eq!(status, StatusCode::OK);
    let leased = positions(&first);
    assert_eq!(leased.len(), 4, "{first}");

    let (_, none) = api.call(Method::GET, &format!("{path}?member=m2&wait=0"), Some(ADMIN), None).await;
    assert!(positions(&none).is_empty(), "leased to m1: {none}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, again) = api.call(Method::GET, &format!("{path}?member=m2&wait=0"), Some(ADMIN), None).await;
    assert_eq!(positions(&again), leased, "m1 did not acknowledge in time: m2 gets them");

    let ack = json!({"positions": leased});
    let (_, body) = api.call(Method::POST, "/v1/clients/client-1/consumers/reader/ack", Some(ADMIN), Some(ack)).await;
    assert_eq!(body["cursor"].as_str(), Some(leased[3].as_str()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_status_tells_stored_from_rejected_and_keeps_tenants_apart() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let own = api.key("client", "client-1").await;
    let other = api.key("client", "client-2").await;
    let consumers = "/v1/clients/client-1/consumers";
    let hook = json!({"name": "hook", "endpoint": "http://127.0.0.1:9/hook", "event_types": ["user-app"], "start": "beginning"});
    assert_eq!(api.call(Method::POST, consumers, Some(ADMIN), Some(hook)).await.0, StatusCode::CREATED);
    let reader = json!({"name": "reader", "kind": "pull", "event_types": ["user-app"], "start": "beginning"});
    assert_eq!(api.call(Method::POST, consumers, Some(ADMIN), Some(reader)).await.0, StatusCode::CREATED);
    store_events(&env, "client-1", "st", 1).await;
    let conn = env.store.pool().get().await.unwrap();
    conn.execute(
        "INSERT INTO rejected_message (sqs_message_id, body, reason, detail, client_id, event_type, version, event_id,
                                       receive_count, received_at)
         VALUES ('sqs-bad-1', '{}', 'schema_violation', '{\"errors\": []}', 'client-1', 'user-app', 2, 'bad-1', 1, now())",
        &[],
    )
    .await
    .unwrap();

    let stored = "/v1/clients/client-1/events/st-00000";
    let (status, body) = api.call(Method::GET, stored, Some(&own), None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("stored")), "{body}");
    assert_eq!(
        body["deliveries"],
        json!([{"consumer": "hook", "state": "pending"}, {"consumer": "reader", "state": "pending"}])
    );
    let position = body["position"].as_str().unwrap().to_owned();

    // The reader acknowledges it; the hook's delivery is parked.
    let (_, pulled) = api.call(Method::GET, &format!("{consumers}/reader/events?wait=10"), Some(&own), None).await;
    assert_eq!(positions(&pulled), [position.clone()]);
    let ack = json!({"positions": [position]});
    assert_eq!(
        api.call(Method::POST, &format!("{consumers}/reader/ack"), Some(&own), Some(ack)).await.0,
        StatusCode::OK
    );
    conn.execute(
        "INSERT INTO parked_delivery (consumer_id, xact_id, seq, client_id, event_id, attempts)
         SELECT c.id, m.xact_id, m.seq, m.client_id, m.event_id, 7 FROM consumer c, message m
         WHERE c.name = 'hook' AND m.event_id = 'st-00000'",
        &[],
    )
    .await
    .unwrap();
    let (_, body) = api.call(Method::GET, stored, Some(&own), None).await;
    assert_eq!(
        body["deliveries"],
        json!([{"consumer": "hook", "state": "parked"}, {"consumer": "reader", "state": "delivered"}])
    );

    let (status, body) = api.call(Method::GET, "/v1/clients/client-1/events/bad-1", Some(&own), None).await;
    assert_eq!(
        (status, body["status"].as_str(), body["reason"].as_str()),
        (StatusCode::OK, Some("rejected"), Some("schema_violation"))
    );
    let (status, body) = api.call(Method::GET, "/v1/clients/client-1/events/never", Some(&own), None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    // Another client's key cannot tell whether the event exists.
    let (status, body) = api.call(Method::GET, stored, Some(&other), None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_keys_are_refused_and_never_listed_with_secrets() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let (status, created) =
        api.call(Method::POST, "/v1/keys", Some(ADMIN), Some(json!({"role": "client", "scope": "client-1"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (id, key) = (created["id"].as_str().unwrap(), created["key"].as_str().unwrap());
    assert_eq!(api.call(Method::GET, "/v1/clients/client-1", Some(key), None).await.0, StatusCode::OK);
    let (status, body) =
        api.call(Method::POST, "/v1/keys", Some(ADMIN), Some(json!({"role": "client", "scope": "x"}))).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_client"));
    let (_, listed) = api.call(Method::GET, "/v1/keys", Some(ADMIN), None).await;
    assert!(!listed.to_string().contains(&key[16..]), "no secret in the listing");
    assert_eq!(api.call(Method::DELETE, &format!("/v1/keys/{id}"), Some(ADMIN), None).await.0, StatusCode::NO_CONTENT);
    let (status, body) = api.call(Method::GET, "/v1/clients/client-1", Some(key), None).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let (_, listed) = api.call(Method::GET, "/v1/keys", Some(ADMIN), None).await;
    assert!(listed[0]["revoked_at"].is_string(), "{listed}");
    assert_eq!(api.call(Method::DELETE, "/v1/keys/zzzzzzzzzzzz", Some(ADMIN), None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_everywhere_and_operators_get_health_and_metrics() {
    let env = TestEnv::new().await;
    let api = Api::start(&env).await;
    let (status, body) = api.call(Method::GET, "/no/such/route", Some(ADMIN), None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = api.call(Method::DELETE, "/v1/events", Some(ADMIN), None).await;
    assert_eq!((status, code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let (status, body) = api.call(Method::GET, "/v1/event-types/user-app/two", Some(ADMIN), None).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{body}");
    let (status, body) =
        api.call(Method::GET, "/v1/clients/client-1/consumers/x/events?limit=many", Some(ADMIN), None).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{body}");
    assert_eq!(api.call(Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(api.call(Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
    let (status, metrics) = api.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.as_str().unwrap().contains("event_api_requests_total"), "{metrics}");
    let (status, served) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, serde_json::from_str::<Value>(&api::openapi::document()).unwrap());
}

#[test]
fn the_openapi_document_in_docs_is_current() {
    let out = Command::new(env!("CARGO_BIN_EXE_api"))
        .arg("openapi")
        .current_dir(std::env::temp_dir())
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let kept = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap_or_default();
    assert!(
        printed == kept,
        "docs/openapi.json is not the API's current OpenAPI document; regenerate it with:\n    \
         cargo run --bin api -- openapi > docs/openapi.json"
    );
}

#[test]
fn a_short_admin_key_stops_startup_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_api"))
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .env("API_ADMIN_KEY", "short-secret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("API_ADMIN_KEY") && stderr.contains("at least 32"), "{stderr}");
    assert!(!stderr.contains("short-secret"), "the key is never printed: {stderr}");
}
