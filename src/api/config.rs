//! The API's settings: flag, else environment (after `.env`), else default. Every
//! value name is the environment variable, so errors name what to fix.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::config::http_addr;

/// Shortest admin key accepted: anything shorter is guessable.
pub const MIN_ADMIN_KEY_CHARS: usize = 32;

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// Where the API (and its /healthz, /readyz, /metrics) listens.
    #[arg(long = "addr", env = "API_ADDR", value_name = "API_ADDR", default_value = "127.0.0.1:8080", value_parser = api_addr)]
    pub addr: SocketAddr,
    /// The operators' key: every right. At least 32 characters.
    #[arg(long, env = "API_ADMIN_KEY", value_name = "API_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
    /// Seconds a request may take before it is answered 503 `timeout`.
    #[arg(long, env = "API_REQUEST_TIMEOUT_SECS", value_name = "API_REQUEST_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout_secs: u64,
    /// Longest a pull request waits for events (its `wait` is capped to this).
    #[arg(long, env = "API_MAX_WAIT_SECS", value_name = "API_MAX_WAIT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub max_wait_secs: u64,
}

/// Redacted: the admin key never reaches a log.
impl fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiArgs")
            .field("addr", &self.addr)
            .field("admin_key", &"<redacted>")
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("max_wait_secs", &self.max_wait_secs)
            .finish()
    }
}

fn api_addr(s: &str) -> Result<SocketAddr, String> {
    match http_addr(s)?.0 {
        Some(addr) => Ok(addr),
        None => Err("expected HOST:PORT such as 127.0.0.1:8080 (the API cannot be off)".to_owned()),
    }
}

impl ApiArgs {
    /// The settings, or a startup error naming the variable at fault.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            admin_key: AdminKey::new(&self.admin_key).map_err(|e| anyhow::anyhow!("API_ADMIN_KEY: {e}"))?,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_wait: Duration::from_secs(self.max_wait_secs),
        })
    }
}

/// How the API runs; `cmd/api` fills it from [`ApiArgs`], tests build it directly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Compared in constant time with every bearer token that is not an `epk_` key.
    pub admin_key: AdminKey,
    /// Every request but long polls is answered within this.
    pub request_timeout: Duration,
    /// Cap of a pull request's `wait`; long polls get it on top of `request_timeout`.
    pub max_wait: Duration,
}

/// The admin key, which prints as `<redacted>`.
#[derive(Clone)]
pub struct AdminKey(String);

impl AdminKey {
    pub fn new(key: &str) -> Result<AdminKey, String> {
        let chars = key.chars().count();
        if chars < MIN_ADMIN_KEY_CHARS {
            return Err(format!("must be at least {MIN_ADMIN_KEY_CHARS} characters, got {chars}"));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".to_owned());
        }
        Ok(AdminKey(key.to_owned()))
    }

    /// Whether `token` is this key, in time that does not depend on where they differ.
    pub fn matches(&self, token: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_bytes(), token.as_bytes()).is_ok()
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_keys_must_be_long_and_never_print() {
        assert!(AdminKey::new("short").unwrap_err().contains("at least 32"));
        let key = AdminKey::new("admin-key-for-tests-0123456789abcdef").unwrap();
        assert!(key.matches("admin-key-for-tests-0123456789abcdef"));
        assert!(!key.matches("admin-key-for-tests-0123456789abcdeF"));
        assert!(!key.matches(""));
        assert_eq!(format!("{key:?}"), "<redacted>");
    }

    #[test]
    fn the_address_cannot_be_off() {
        assert!(api_addr("off").is_err());
        assert_eq!(api_addr("127.0.0.1:8080").unwrap().port(), 8080);
    }
}
