//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): how a delivery
//! is signed ([`sign`]) and checked ([`verify`]). The sender and the fake consumers
//! both use this module, so the two sides cannot drift apart, and receivers can use
//! any Standard Webhooks or Svix library against us.
//!
//! A signature is `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")).
//! Key material never leaves [`Secret`]: its `Debug` is redacted and no error here
//! quotes the secret's text, so secrets can't leak through logs or error messages.

use std::fmt;
use std::ops::RangeInclusive;

use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Prefix of a secret's text form, as Standard Webhooks and Svix write it.
pub const SECRET_PREFIX: &str = "whsec_";

/// Key sizes we accept. The spec asks for at least 24 bytes; 64 bytes is
/// HMAC-SHA256's block size, and a longer key would only be hashed down first.
const KEY_LEN: RangeInclusive<usize> = 24..=64;

/// Version tag of symmetric (HMAC-SHA256) signatures. Other versions in a header
/// (such as `v1a`, asymmetric) are skipped, as the spec requires.
const VERSION: &str = "v1";

/// A consumer's signing key.
///
/// Holds the key as a ready HMAC-SHA256 key (inside aws-lc) rather than as bytes, so
/// signing does not redo the key setup and nothing here can print or serialise the
/// key. (The decoded bytes are dropped right after parsing, though not zeroed.)
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl Secret {
    /// Reads `whsec_<base64>`; a bare base64 string is tolerated too, since some
    /// tools print secrets without the prefix. The key must be 24 to 64 bytes.
    pub fn parse(s: &str) -> Result<Secret, SecretError> {
        let s = s.trim();
        let encoded = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        // The decode error is dropped on purpose: it names the offending character.
        let bytes = STANDARD.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !KEY_LEN.contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(Secret { key: hmac::Key::new(hmac::HMAC_SHA256, &bytes) })
    }

    /// A new random secret in its text form, `whsec_` + base64 of 32 random bytes.
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
    }

    /// HMAC-SHA256 of `{msg_id}.{timestamp}.{body}`, fed in pieces so a large body
    /// is not copied.
    fn tag(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(msg_id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        context.sign()
    }
}

/// Redacted, so a secret inside any settings struct is safe to log with `{:?}`.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret was refused. No variant carries any of the secret's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret is empty (expected whsec_ followed by base64)")]
    Empty,
    #[error("the secret is not valid base64 (expected whsec_ followed by standard base64)")]
    NotBase64,
    #[error("the secret's key is {0} bytes; expected 24 to 64")]
    Length(usize),
}

/// The `webhook-signature` header value for one delivery: `v1,<base64 signature>`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.tag(msg_id, timestamp, body);
    format!("{VERSION},{}", STANDARD.encode(tag.as_ref()))
}

/// Checks a delivery's `webhook-id`, `webhook-timestamp` and `webhook-signature`
/// header values (pass `""` for an absent header) against its raw body.
///
/// The timestamp must lie within `now ± tolerance_secs` (Unix seconds), which bounds
/// how long a captured request can be replayed. The signature header may list several
/// space-separated signatures (for example during a secret rotation); any matching
/// `v1` entry passes. Comparisons are constant-time.
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    if msg_id.is_empty() || timestamp_header.trim().is_empty() || signature_header.trim().is_empty() {
        return Err(VerifyError::MissingHeader);
    }
    let timestamp: i64 = timestamp_header.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    let tolerance = u64::try_from(tolerance_secs).unwrap_or(0);
    if now.abs_diff(timestamp) > tolerance {
        return Err(VerifyError::Stale);
    }
    let expected = secret.tag(msg_id, timestamp, body);
    let matched = signature_header
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .any(|signature| constant_time::verify_slices_are_equal(&signature, expected.as_ref()).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the webhook-id, webhook-timestamp or webhook-signature header is missing")]
    MissingHeader,
    #[error("webhook-timestamp is not a whole number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is too far from the current time")]
    Stale,
    #[error("no signature in webhook-signature matches")]
    NoMatch,
}

impl VerifyError {
    /// A stable snake_case code, for JSON error bodies and log fields.
    pub fn code(self) -> &'static str {
        match self {
            VerifyError::MissingHeader => "missing_header",
            VerifyError::BadTimestamp => "bad_timestamp",
            VerifyError::Stale => "stale_timestamp",
            VerifyError::NoMatch => "no_matching_signature",
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    // The test vector published with the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> Secret {
        Secret::parse(SPEC_SECRET).expect("the spec's secret parses")
    }

    fn check(signature_header: &str, body: &[u8], now: i64) -> Result<(), VerifyError> {
        verify(&spec_secret(), SPEC_ID, &SPEC_TIMESTAMP.to_string(), signature_header, body, now, 300)
    }

    #[test]
    fn signs_the_spec_test_vector() {
        assert_eq!(sign(&spec_secret(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP), Ok(()));
    }

    #[test]
    fn round_trip_with_a_generated_secret() {
        let secret = Secret::parse(&Secret::generate()).unwrap();
        let body = br#"{"client_id":"client-1","event_id":"e-1"}"#;
        let signature = sign(&secret, "msg_1", 1_700_000_000, body);
        assert!(signature.starts_with("v1,"));
        assert_eq!(verify(&secret, "msg_1", "1700000000", &signature, body, 1_700_000_000, 300), Ok(()));
        // Within tolerance on either side.
        assert_eq!(verify(&secret, "msg_1", "1700000000", &signature, body, 1_700_000_300, 300), Ok(()));
        assert_eq!(verify(&secret, "msg_1", "1700000000", &signature, body, 1_699_999_700, 300), Ok(()));
    }

    #[test]
    fn a_tampered_delivery_fails() {
        assert_eq!(check(SPEC_SIGNATURE, br#"{"test": 2432232315}"#, SPEC_TIMESTAMP), Err(VerifyError::NoMatch));
        let by_id = verify(&spec_secret(), "msg_other", "1614265330", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP, 300);
        assert_eq!(by_id, Err(VerifyError::NoMatch));
        // The timestamp is signed too: moving it by one second breaks the signature.
        let moved = verify(&spec_secret(), SPEC_ID, "1614265331", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP, 300);
        assert_eq!(moved, Err(VerifyError::NoMatch));
        let other_secret = Secret::parse(&Secret::generate()).unwrap();
        let wrong_key = verify(&other_secret, SPEC_ID, "1614265330", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP, 300);
        assert_eq!(wrong_key, Err(VerifyError::NoMatch));
    }

    #[test]
    fn a_stale_or_future_timestamp_fails() {
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP + 301), Err(VerifyError::Stale));
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP - 301), Err(VerifyError::Stale));
        // Extreme values must not overflow.
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, i64::MIN), Err(VerifyError::Stale));
        let huge = verify(&spec_secret(), SPEC_ID, &i64::MAX.to_string(), SPEC_SIGNATURE, SPEC_BODY, i64::MIN, 300);
        assert_eq!(huge, Err(VerifyError::Stale));
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let rotated = format!("v1,c2lnbmVkIHdpdGggdGhlIG9sZCBrZXk= v1a,bm90IGhtYWM= garbage {SPEC_SIGNATURE}");
        assert_eq!(check(&rotated, SPEC_BODY, SPEC_TIMESTAMP), Ok(()));
        let none = "v1,c2lnbmVkIHdpdGggdGhlIG9sZCBrZXk= v1,not-base64!";
        assert_eq!(check(none, SPEC_BODY, SPEC_TIMESTAMP), Err(VerifyError::NoMatch));
        // The right bytes under another version tag do not count.
        let wrong_version = SPEC_SIGNATURE.replacen("v1,", "v2,", 1);
        assert_eq!(check(&wrong_version, SPEC_BODY, SPEC_TIMESTAMP), Err(VerifyError::NoMatch));
    }

    #[test]
    fn missing_headers_and_bad_timestamps_are_named() {
        let secret = spec_secret();
        let missing = [("", "1614265330", SPEC_SIGNATURE), (SPEC_ID, "", SPEC_SIGNATURE), (SPEC_ID, "1614265330", " ")];
        for (id, timestamp, signature) in missing {
            let result = verify(&secret, id, timestamp, signature, SPEC_BODY, SPEC_TIMESTAMP, 300);
            assert_eq!(result, Err(VerifyError::MissingHeader));
        }
        for timestamp in ["yesterday", "1614265330.5", "99999999999999999999"] {
            let result = verify(&secret, SPEC_ID, timestamp, SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP, 300);
            assert_eq!(result, Err(VerifyError::BadTimestamp));
        }
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_ne!(a, b);
        let encoded = a.strip_prefix(SECRET_PREFIX).expect("whsec_ prefix");
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), 32);
        assert!(Secret::parse(&a).is_ok());
    }

    #[test]
    fn a_bare_base64_secret_is_the_same_key() {
        let bare = Secret::parse(SPEC_SECRET.strip_prefix(SECRET_PREFIX).unwrap()).unwrap();
        assert_eq!(sign(&bare, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
    }

    #[test]
    fn bad_secrets_are_refused_without_quoting_them() {
        let short = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 16]));
        let long = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 65]));
        let not_base64 = "whsec_this-is-not*base64";
        assert_eq!(Secret::parse(&short).unwrap_err(), SecretError::Length(16));
        assert_eq!(Secret::parse(&long).unwrap_err(), SecretError::Length(65));
        assert_eq!(Secret::parse("whsec_").unwrap_err(), SecretError::Empty);
        assert_eq!(Secret::parse(not_base64).unwrap_err(), SecretError::NotBase64);
        for input in [short.as_str(), long.as_str(), not_base64] {
            let error = Secret::parse(input).unwrap_err();
            let encoded = input.strip_prefix(SECRET_PREFIX).unwrap();
            assert!(!error.to_string().contains(encoded), "{error}");
            assert!(!format!("{error:?}").contains(encoded), "{error:?}");
        }
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let printed = format!("{:?}", spec_secret());
        assert_eq!(printed, "Secret(<redacted>)");
        assert!(!format!("{:#?}", Some(spec_secret())).contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    }
}
