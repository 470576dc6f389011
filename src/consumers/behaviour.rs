//! How a fake consumer answers a delivery whose signature checked out: accept it, or
//! refuse it the ways real endpoints do (flaky, slow, down for a while, rate limited,
//! removed). Tests change it at run time with `PUT /_control/{name}`, so one running
//! service can play every failure the sender must survive.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

/// One consumer's current behaviour. Changed only through [`Behaviour::apply`], which
/// validates first, so it never holds a value the handler cannot act on.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Share of deliveries refused at random with `fail_status`: a flaky endpoint.
    fail_ratio: f64,
    /// The status of those random refusals.
    fail_status: StatusCode,
    /// Wait before answering: a slow endpoint, or one past the sender's timeout.
    delay: Duration,
    /// A timed outage, which ends by itself so a test needs no second call to recover.
    outage: Option<Outage>,
    /// `Retry-After` seconds sent with 429 and 503 answers, to test that the sender
    /// honours it.
    retry_after_secs: Option<u64>,
    /// Answer 410 Gone to everything: the endpoint was removed for good.
    gone: bool,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    status: StatusCode,
    until: Instant,
}

/// What to answer one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Answer `status`; `reason` goes into the JSON error body, to tell injected
    /// failures apart when reading a sender's logs.
    Refuse {
        status: StatusCode,
        reason: &'static str,
    },
}

/// The body of `PUT /_control/{name}`. Every field is optional: absent means unchanged.
/// Unknown fields are refused, so a typo can't silently change nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    fail_ratio: Option<f64>,
    fail_status: Option<u16>,
    delay_ms: Option<u64>,
    /// `{"status": 503, "secs": 30}`; `secs: 0` ends an outage early.
    status_for_secs: Option<TimedStatus>,
    /// 0 removes the header.
    retry_after_secs: Option<u64>,
    gone: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimedStatus {
    status: u16,
    secs: u64,
}

impl Behaviour {
    /// The starting behaviour from the command line: accept everything except a share
    /// `fail_ratio` (answered 500), after `delay_ms`.
    pub fn new(fail_ratio: f64, delay_ms: u64) -> Result<Behaviour, String> {
        Ok(Behaviour {
            fail_ratio: ratio(fail_ratio)?,
            fail_status: StatusCode::INTERNAL_SERVER_ERROR,
            delay: Duration::from_millis(delay_ms),
            outage: None,
            retry_after_secs: None,
            gone: false,
        })
    }

    /// Applies all of `update` or, when any field is invalid, none of it.
    pub fn apply(&mut self, update: Update, now: Instant) -> Result<(), String> {
        let fail_ratio = update.fail_ratio.map(ratio).transpose()?;
        let fail_status = update.fail_status.map(refusal_status).transpose()?;
        let outage = match update.status_for_secs {
            None => None,
            Some(TimedStatus { secs: 0, .. }) => Some(None),
            Some(TimedStatus { status, secs }) => {
                let status = refusal_status(status)?;
                let until = now.checked_add(Duration::from_secs(secs)).ok_or("status_for_secs.secs is too large")?;
                Some(Some(Outage { status, until }))
            }
        };
        if let Some(fail_ratio) = fail_ratio {
            self.fail_ratio = fail_ratio;
        }
        if let Some(fail_status) = fail_status {
            self.fail_status = fail_status;
        }
        if let Some(delay_ms) = update.delay_ms {
            self.delay = Duration::from_millis(delay_ms);
        }
        if let Some(outage) = outage {
            self.outage = outage;
        }
        if let Some(secs) = update.retry_after_secs {
            self.retry_after_secs = (secs > 0).then_some(secs);
        }
        if let Some(gone) = update.gone {
            self.gone = gone;
        }
        Ok(())
    }

    /// How long to wait before answering.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The answer to the next delivery. Gone beats an outage, which beats random
    /// failures; an outage that has run its course is cleared here.
    pub fn verdict(&mut self, now: Instant) -> Verdict {
        if self.gone {
            return Verdict::Refuse { status: StatusCode::GONE, reason: "gone" };
        }
        if let Some(outage) = self.outage {
            if now < outage.until {
                return Verdict::Refuse { status: outage.status, reason: "outage" };
            }
            self.outage = None;
        }
        // `random::<f64>()` is in [0, 1): a ratio of 0 never fails and 1 always does.
        if self.fail_ratio > 0.0 && rand::random::<f64>() < self.fail_ratio {
            return Verdict::Refuse { status: self.fail_status, reason: "random_failure" };
        }
        Verdict::Accept
    }

    /// The `Retry-After` seconds for an answer with `status`, if any: only 429 and 503
    /// carry one, as in HTTP.
    pub fn retry_after(&self, status: StatusCode) -> Option<u64> {
        let carries = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        self.retry_after_secs.filter(|_| carries)
    }

    /// The behaviour in the shape `PUT /_control/{name}` accepts; an outage shows the
    /// seconds it has left.
    pub fn to_json(&self, now: Instant) -> Value {
        let outage = self.outage.filter(|outage| now < outage.until).map(|outage| {
            let left = outage.until.duration_since(now);
            json!({ "status": outage.status.as_u16(), "secs": left.as_secs() + u64::from(left.subsec_nanos() > 0) })
        });
        json!({
            "fail_ratio": self.fail_ratio,
            "fail_status": self.fail_status.as_u16(),
            "delay_ms": u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX),
            "status_for_secs": outage,
            "retry_after_secs": self.retry_after_secs,
            "gone": self.gone,
        })
    }
}

/// A share from 0 to 1.
fn ratio(value: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("fail_ratio must be from 0 to 1, got {value}"))
    }
}

/// A status an endpoint refuses a delivery with: redirects and errors, not 1xx or 2xx
/// (a 2xx would look like success without the delivery being recorded).
fn refusal_status(code: u16) -> Result<StatusCode, String> {
    match code {
        300..=599 => StatusCode::from_u16(code).map_err(|e| format!("status {code}: {e}")),
        _ => Err(format!("status {code} is not a refusal: expected 300 to 599")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> Update {
        serde_json::from_str(json).expect("a valid update")
    }

    #[test]
    fn accepts_by_default_and_refuses_at_the_ratio() {
        let now = Instant::now();
        let mut calm = Behaviour::new(0.0, 0).unwrap();
        assert!((0..100).all(|_| calm.verdict(now) == Verdict::Accept));
        let mut broken = Behaviour::new(1.0, 0).unwrap();
        let refused = Verdict::Refuse { status: StatusCode::INTERNAL_SERVER_ERROR, reason: "random_failure" };
        assert!((0..100).all(|_| broken.verdict(now) == refused));
        broken.apply(update(r#"{"fail_status": 429}"#), now).unwrap();
        let limited = Verdict::Refuse { status: StatusCode::TOO_MANY_REQUESTS, reason: "random_failure" };
        assert_eq!(broken.verdict(now), limited);
        assert!(Behaviour::new(1.5, 0).is_err());
        assert!(Behaviour::new(f64::NAN, 0).is_err());
    }

    #[test]
    fn an_outage_ends_by_itself() {
        let t0 = Instant::now();
        let mut behaviour = Behaviour::new(0.0, 0).unwrap();
        behaviour.apply(update(r#"{"status_for_secs": {"status": 503, "secs": 30}}"#), t0).unwrap();
        let outage = Verdict::Refuse { status: StatusCode::SERVICE_UNAVAILABLE, reason: "outage" };
        assert_eq!(behaviour.verdict(t0 + Duration::from_secs(29)), outage);
        let shown = behaviour.to_json(t0 + Duration::from_secs(10));
        assert_eq!(shown["status_for_secs"], json!({"status": 503, "secs": 20}));
        assert_eq!(behaviour.verdict(t0 + Duration::from_secs(30)), Verdict::Accept);
        assert_eq!(behaviour.to_json(t0)["status_for_secs"], Value::Null);
    }

    #[test]
    fn zero_seconds_ends_an_outage_early() {
        let t0 = Instant::now();
        let mut behaviour = Behaviour::new(0.0, 0).unwrap();
        behaviour.apply(update(r#"{"status_for_secs": {"status": 500, "secs": 60}}"#), t0).unwrap();
        behaviour.apply(update(r#"{"status_for_secs": {"status": 500, "secs": 0}}"#), t0).unwrap();
        assert_eq!(behaviour.verdict(t0), Verdict::Accept);
    }

    #[test]
    fn gone_wins_and_can_be_undone() {
        let now = Instant::now();
        let mut behaviour = Behaviour::new(1.0, 0).unwrap();
        behaviour.apply(update(r#"{"gone": true, "status_for_secs": {"status": 503, "secs": 60}}"#), now).unwrap();
        assert_eq!(behaviour.verdict(now), Verdict::Refuse { status: StatusCode::GONE, reason: "gone" });
        behaviour.apply(update(r#"{"gone": false, "fail_ratio": 0}"#), now).unwrap();
        let outage = Verdict::Refuse { status: StatusCode::SERVICE_UNAVAILABLE, reason: "outage" };
        assert_eq!(behaviour.verdict(now), outage);
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let mut behaviour = Behaviour::new(0.0, 0).unwrap();
        assert_eq!(behaviour.retry_after(StatusCode::SERVICE_UNAVAILABLE), None);
        behaviour.apply(update(r#"{"retry_after_secs": 7}"#), Instant::now()).unwrap();
        assert_eq!(behaviour.retry_after(StatusCode::SERVICE_UNAVAILABLE), Some(7));
        assert_eq!(behaviour.retry_after(StatusCode::TOO_MANY_REQUESTS), Some(7));
        assert_eq!(behaviour.retry_after(StatusCode::INTERNAL_SERVER_ERROR), None);
        behaviour.apply(update(r#"{"retry_after_secs": 0}"#), Instant::now()).unwrap();
        assert_eq!(behaviour.retry_after(StatusCode::SERVICE_UNAVAILABLE), None);
    }

    #[test]
    fn an_invalid_update_changes_nothing() {
        let now = Instant::now();
        let mut behaviour = Behaviour::new(0.0, 0).unwrap();
        for bad in [
            r#"{"fail_ratio": 0.5, "fail_status": 200}"#,
            r#"{"delay_ms": 10, "fail_ratio": 2}"#,
            r#"{"gone": true, "status_for_secs": {"status": 99, "secs": 5}}"#,
            r#"{"gone": true, "status_for_secs": {"status": 503, "secs": 18446744073709551615}}"#,
        ] {
            assert!(behaviour.apply(update(bad), now).is_err(), "{bad}");
        }
        let unchanged = Behaviour::new(0.0, 0).unwrap().to_json(now);
        assert_eq!(behaviour.to_json(now), unchanged);
        assert!(serde_json::from_str::<Update>(r#"{"fail_rate": 1}"#).is_err());
        assert!(serde_json::from_str::<Update>(r#"{"status_for_secs": {"status": 500}}"#).is_err());
    }
}
