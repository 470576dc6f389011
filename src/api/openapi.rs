//! The API's OpenAPI document, derived from the handlers' `#[utoipa::path]`
//! annotations and their request and response types. Served at `/openapi.json`,
//! printed by `api openapi`; `docs/openapi.json` keeps a copy, which a test keeps
//! current.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::{clients, consumers, event_types, events, keys, producers, pull, registry};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "event-processor platform API",
        version = "1",
        description = "Tenants, producers, event types, subscriptions and consumers; event ingest \
                       validated as the processor validates; event status; pull consumption. \
                       Every error is `{\"error\": {\"code\", \"message\"}}` with a stable code."
    ),
    paths(
        keys::create_key,
        keys::list_keys,
        keys::revoke_key,
        clients::create_client,
        clients::list_clients,
        clients::get_client,
        clients::delete_client,
        clients::list_subscriptions,
        clients::subscribe,
        clients::unsubscribe,
        producers::put_producer,
        producers::list_producers,
        producers::get_producer,
        producers::delete_producer,
        event_types::register_event_type,
        event_types::list_event_types,
        event_types::get_event_type,
        event_types::delete_event_type,
        consumers::register::create_consumer,
        consumers::list_consumers,
        consumers::get_consumer,
        consumers::delete_consumer,
        consumers::pause_consumer,
        consumers::resume_consumer,
        consumers::move_cursor,
        events::ingest,
        events::ingest_batch,
        events::status::event_status,
        pull::pull_events,
        pull::ack_events,
        registry::export_registry,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerKey),
    security(("bearer" = [])),
    tags(
        (name = "keys", description = "API keys for producers and clients (admin key only)"),
        (name = "clients", description = "Tenants and their subscriptions"),
        (name = "producers", description = "Applications that emit events; versions only move forward"),
        (name = "event_types", description = "One immutable JSON Schema per event type and version"),
        (name = "consumers", description = "Push (webhook) and pull consumers, their state and cursor"),
        (name = "events", description = "Ingest onto the queue, and where an event is"),
        (name = "pull", description = "Long-poll reads for the members of a pull consumer, and acknowledgements"),
        (name = "registry", description = "The whole registry as a registry file (admin key only)"),
    )
)]
pub struct ApiDoc;

/// Every route takes `Authorization: Bearer <key>`: API_ADMIN_KEY, or an
/// `epk_<id>_<secret>` key from `POST /v1/keys`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(utoipa::openapi::Components::new);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("epk_<id>_<secret>")
            .description(Some("The admin key (API_ADMIN_KEY), or a producer or client key from POST /v1/keys"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as pretty JSON, as `api openapi` prints it (without the final newline).
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/v1/events") && paths.contains_key("/v1/clients/{client}/consumers/{name}/ack"));
        let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(operations, 31);
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    }
}
