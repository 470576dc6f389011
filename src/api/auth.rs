//! Who is calling. Every protected handler takes a [`Caller`], the extractor that
//! reads `Authorization: Bearer <key>`, so no handler can forget authentication; it
//! then asks the caller for the right it needs (`caller.client(&id)?`), so none can
//! forget authorization either.
//!
//! Keys are `epk_<id>_<secret>`: `id` is 12 lowercase letters and digits, `secret`
//! 32 random bytes in unpadded base64url. Only the SHA-256 of the secret is stored.
//! The admin key is API_ADMIN_KEY. A client key asking about another client gets the
//! same 404 as for a client that does not exist, so keys cannot probe for tenants.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{digest, SHA256};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::ApiError;
use super::ApiContext;

const KEY_PREFIX: &str = "epk_";
const ID_CHARS: usize = 12;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// API_ADMIN_KEY: everything.
    Admin,
    /// Sends the event types this producer owns; registers its own event types.
    Producer(String),
    /// Manages this client's subscriptions and consumers; reads its events.
    Client(String),
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `admin`, or the key's id: what logs show, never the key.
    pub key_id: String,
    pub role: Role,
}

impl FromRequestParts<Arc<ApiContext>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<ApiContext>) -> Result<Caller, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthenticated)?;
        let caller = if ctx.settings.admin_key.matches(&token) {
            Caller { key_id: "admin".to_owned(), role: Role::Admin }
        } else {
            lookup(ctx, &token).await?
        };
        // The request's span and log line (see `observe` in the parent module) name the key.
        tracing::Span::current().record("key", caller.key_id.as_str());
        if let Some(slot) = parts.extensions.get::<KeySlot>() {
            slot.fill(&caller.key_id);
        }
        Ok(caller)
    }
}

/// Where the [`Caller`] extractor leaves the key id for the request's log line.
#[derive(Debug, Clone, Default)]
pub struct KeySlot(Arc<std::sync::Mutex<Option<String>>>);

impl KeySlot {
    fn fill(&self, key_id: &str) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key_id.to_owned());
    }

    /// The key id, once a handler authenticated the request.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// `(id, secret)` of a well-formed `epk_` key.
fn parse_key(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let id_ok = id.len() == ID_CHARS && id.bytes().all(|b| ID_ALPHABET.contains(&b));
    (id_ok && !secret.is_empty() && secret.len() <= 128).then_some((id, secret))
}

fn hash(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

async fn lookup(ctx: &ApiContext, token: &str) -> Result<Caller, ApiError> {
    let (id, secret) = parse_key(token).ok_or(ApiError::Unauthenticated)?;
    let conn = ctx.store.pool().get().await?;
    let row = conn
        .query_opt("SELECT secret_hash, role, scope FROM api_key WHERE id = $1 AND revoked_at IS NULL", &[&id])
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let stored: Vec<u8> = row.get(0);
    verify_slices_are_equal(&stored, &hash(secret)).map_err(|_| ApiError::Unauthenticated)?;
    let (role, scope): (String, String) = (row.get(1), row.get(2));
    let role = match role.as_str() {
        "producer" => Role::Producer(scope),
        "client" => Role::Client(scope),
        _ => return Err(ApiError::Unauthenticated),
    };
    Ok(Caller { key_id: id.to_owned(), role })
}

/// A new key: its id, the key to hand out (once), and the hash to store.
pub fn generate() -> (String, String, Vec<u8>) {
    let id: String = (0..ID_CHARS).map(|_| ID_ALPHABET[rand::random_range(0..ID_ALPHABET.len())] as char).collect();
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let key = format!("{KEY_PREFIX}{id}_{secret}");
    let hashed = hash(&secret);
    (id, key, hashed)
}

/// The 404 for a client that does not exist or is not the caller's.
pub fn unknown_client(client_id: &str) -> ApiError {
    ApiError::not_found(format!("client '{client_id}'"))
}

impl Caller {
    /// Only the admin key.
    pub fn admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::Forbidden("only the admin key may do this".to_owned())),
        }
    }

    /// The admin key, or this client's key (another client's key gets a 404).
    pub fn client(&self, client_id: &str) -> Result<(), ApiError> {
        match &self.role {
            Role::Admin => Ok(()),
            Role::Client(own) if own == client_id => Ok(()),
            Role::Client(_) => Err(unknown_client(client_id)),
            Role::Producer(_) => Err(ApiError::Forbidden("a producer key cannot act for clients".to_owned())),
        }
    }

    /// Which clients the caller may see: all (`None`) or its own.
    pub fn visible_clients(&self) -> Result<Option<&str>, ApiError> {
        match &self.role {
            Role::Admin => Ok(None),
            Role::Client(own) => Ok(Some(own)),
            Role::Producer(_) => Err(ApiError::Forbidden("a producer key cannot list clients".to_owned())),
        }
    }

    /// The admin key, or this producer's key (another producer's key gets a 404).
    pub fn producer(&self, producer_id: &str) -> Result<(), ApiError> {
        match &self.role {
            Role::Admin => Ok(()),
            Role::Producer(own) if own == producer_id => Ok(()),
            Role::Producer(_) => Err(ApiError::not_found(format!("producer '{producer_id}'"))),
            Role::Client(_) => Err(ApiError::Forbidden("a client key cannot act for producers".to_owned())),
        }
    }

    /// Which producers the caller may see: all (`None`) or its own.
    pub fn visible_producers(&self) -> Result<Option<&str>, ApiError> {
        match &self.role {
            Role::Admin => Ok(None),
            Role::Producer(own) => Ok(Some(own)),
            Role::Client(_) => Err(ApiError::Forbidden("a client key cannot list producers".to_owned())),
        }
    }

    /// May send events: the admin key (any event type, `None`) or a producer key
    /// (the event types its producer owns, `Some(producer)`).
    pub fn sender(&self) -> Result<Option<&str>, ApiError> {
        match &self.role {
            Role::Admin => Ok(None),
            Role::Producer(own) => Ok(Some(own)),
            Role::Client(_) => Err(ApiError::Forbidden("a client key cannot send events".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_to_what_is_stored() {
        let (id, key, hashed) = generate();
        let (parsed_id, secret) = parse_key(&key).unwrap();
        assert_eq!(parsed_id, id);
        assert_eq!(hash(secret), hashed);
        assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in ["", "epk_", "epk_short_x", "epk_ABCDEFGHIJKL_x", "epk_abcdefghijkl_", "xpk_abcdefghijkl_x"] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_key("epk_abcdefghijkl_a_b-c"), Some(("abcdefghijkl", "a_b-c")));
    }

    #[test]
    fn a_client_key_sees_only_its_own_client() {
        let caller = Caller { key_id: "k".into(), role: Role::Client("client-1".into()) };
        assert!(caller.client("client-1").is_ok());
        assert_eq!(caller.client("client-2").unwrap_err().code(), "not_found");
        assert_eq!(caller.admin().unwrap_err().code(), "forbidden");
        assert_eq!(caller.sender().unwrap_err().code(), "forbidden");
        let producer = Caller { key_id: "p".into(), role: Role::Producer("identity".into()) };
        assert_eq!(producer.client("client-1").unwrap_err().code(), "forbidden");
        assert_eq!(producer.sender().unwrap(), Some("identity"));
    }
}
