//! The log: every row of `message` in one commit-safe total order, `(xact_id, seq)`,
//! read only below the oldest transaction still running. `docs/design.md` has the
//! argument; in short, no transaction with an id below
//! `pg_snapshot_xmin(pg_current_snapshot())` can still commit, so a row can never
//! appear behind a position a reader has passed. The sender and the pull API both
//! read through [`read_after`].

use std::fmt;
use std::str::FromStr;

use tokio_postgres::GenericClient;

/// A place in the log: the inserting transaction's id, then the row's sequence
/// number. Written `XACT.SEQ`; `0.0` is before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub xact: i64,
    pub seq: i64,
}

impl Position {
    pub const BEGINNING: Position = Position { xact: 0, seq: 0 };

    /// The cursor after which this position comes first (sequence numbers start at 1).
    pub fn just_before(self) -> Position {
        Position { xact: self.xact, seq: self.seq.saturating_sub(1) }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.xact, self.seq)
    }
}

impl FromStr for Position {
    type Err = String;

    fn from_str(s: &str) -> Result<Position, String> {
        let bad = || format!("expected a log position XACT.SEQ such as 742.10093, got '{s}'");
        let (xact, seq) = s.trim().split_once('.').ok_or_else(bad)?;
        let (xact, seq) = (xact.parse::<i64>().map_err(|_| bad())?, seq.parse::<i64>().map_err(|_| bad())?);
        if xact < 0 || seq < 0 {
            return Err(bad());
        }
        Ok(Position { xact, seq })
    }
}

/// Where a consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every event ever stored for its client.
    Beginning,
    /// Events committed from now on (the head of the log when it is registered).
    New,
    /// Events after this position.
    After(Position),
}

impl FromStr for Start {
    type Err = String;

    fn from_str(s: &str) -> Result<Start, String> {
        match s.trim() {
            "beginning" => Ok(Start::Beginning),
            "new" => Ok(Start::New),
            other => other
                .parse()
                .map(Start::After)
                .map_err(|_| format!("expected beginning, new or a position XACT.SEQ, got '{other}'")),
        }
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::Beginning => f.write_str("beginning"),
            Start::New => f.write_str("new"),
            Start::After(p) => write!(f, "{p}"),
        }
    }
}

/// The read horizon: rows at or after `(xmin, 0)` may still be uncommitted.
pub async fn horizon(db: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    let row = db.query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint", &[]).await?;
    Ok(row.get(0))
}

/// The cursor of a start: `New` is the head of the log now (everything below the
/// horizon is behind it; nothing stored later is).
pub async fn resolve(db: &impl GenericClient, start: Start) -> Result<Position, tokio_postgres::Error> {
    Ok(match start {
        Start::Beginning => Position::BEGINNING,
        Start::After(p) => p,
        Start::New => Position { xact: horizon(db).await?, seq: 0 },
    })
}

/// A stored event as the log hands it out.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub position: Position,
    pub client_id: String,
    pub event_id: String,
    pub event_type: String,
    pub version: i32,
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    pub stored_at: chrono::DateTime<chrono::Utc>,
    /// The payload as JSON text, exactly as stored.
    pub payload: String,
}

/// The columns of `message m` a [`LogEvent`] is read from, in [`LogEvent::from_row`]'s order.
pub const EVENT_COLUMNS: &str =
    "m.xact_id, m.seq, m.event_id, m.event_type, m.version, m.occurred_at, m.stored_at, m.payload::text";

impl LogEvent {
    /// An event of `client_id` from a row that starts with [`EVENT_COLUMNS`].
    pub fn from_row(client_id: &str, r: &tokio_postgres::Row) -> LogEvent {
        LogEvent {
            position: Position { xact: r.get(0), seq: r.get(1) },
            client_id: client_id.to_owned(),
            event_id: r.get(2),
            event_type: r.get(3),
            version: r.get(4),
            occurred_at: r.get(5),
            stored_at: r.get(6),
            payload: r.get(7),
        }
    }

    /// The event as its consumers receive it: `event_id`, `client_id`, `event_type`,
    /// `version`, `occurred_at`, `payload`. Built from the stored JSON text, without
    /// parsing the payload again.
    pub fn body(&self) -> String {
        let string = |s: &str| serde_json::to_string(s).expect("strings serialize");
        let occurred_at = match &self.occurred_at {
            Some(t) => string(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            None => "null".to_owned(),
        };
        format!(
            r#"{{"event_id":{},"client_id":{},"event_type":{},"version":{},"occurred_at":{},"payload":{}}}"#,
            string(&self.event_id),
            string(&self.client_id),
            string(&self.event_type),
            self.version,
            occurred_at,
            self.payload
        )
    }
}

/// What a reader selects: one client's events, of some types (each with an optional
/// version; `None` for every version).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub client_id: String,
    pub event_types: Vec<String>,
    /// Parallel to `event_types`; 0 for every version.
    pub versions: Vec<i32>,
}

/// Up to `limit` events of `selection` strictly after `after`, in log order, all
/// committed; and the horizon the read was bounded by. When fewer than `limit` come
/// back, every matching event below the horizon was returned, so a reader that has
/// handled them may move its cursor to `(horizon, 0)`; it skips nothing.
pub async fn read_after(
    db: &impl GenericClient,
    selection: &Selection,
    after: Position,
    limit: i64,
) -> Result<(Vec<LogEvent>, i64), tokio_postgres::Error> {
    let horizon = horizon(db).await?;
    let rows = db
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS}
             FROM message m
             WHERE m.client_id = $1 AND (m.xact_id, m.seq) > ($2, $3) AND m.xact_id < $4
               AND EXISTS (SELECT 1 FROM UNNEST($5::text[], $6::int4[]) AS s(event_type, version)
                           WHERE s.event_type = m.event_type AND (s.version = 0 OR s.version = m.version))
             ORDER BY m.xact_id, m.seq
             LIMIT $7"
            ),
            &[
                &selection.client_id,
                &after.xact,
                &after.seq,
                &horizon,
                &selection.event_types,
                &selection.versions,
                &limit,
            ],
        )
        .await?;
    let events = rows.iter().map(|r| LogEvent::from_row(&selection.client_id, r)).collect();
    Ok((events, horizon))
}

/// The newest committed position of a client's events (for cursor lag).
pub async fn head(db: &impl GenericClient, client_id: &str) -> Result<Position, tokio_postgres::Error> {
    let horizon = horizon(db).await?;
    let row = db
        .query_opt(
            "SELECT xact_id, seq FROM message WHERE client_id = $1 AND xact_id < $2
             ORDER BY xact_id DESC, seq DESC LIMIT 1",
            &[&client_id, &horizon],
        )
        .await?;
    Ok(row.map(|r| Position { xact: r.get(0), seq: r.get(1) }).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_print_and_order() {
        let p: Position = "742.10093".parse().unwrap();
        assert_eq!(p, Position { xact: 742, seq: 10093 });
        assert_eq!(p.to_string(), "742.10093");
        assert!(Position { xact: 742, seq: 9 } < Position { xact: 743, seq: 1 });
        for bad in ["", "7", "a.b", "-1.2", "1.2.3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
        assert_eq!("new".parse::<Start>(), Ok(Start::New));
        assert_eq!("beginning".parse::<Start>(), Ok(Start::Beginning));
        assert_eq!("3.4".parse::<Start>(), Ok(Start::After(Position { xact: 3, seq: 4 })));
    }

    #[test]
    fn the_body_embeds_the_stored_payload_text() {
        let event = LogEvent {
            position: Position { xact: 1, seq: 2 },
            client_id: "client-1".into(),
            event_id: "e\"1".into(),
            event_type: "user-app".into(),
            version: 2,
            occurred_at: None,
            stored_at: chrono::Utc::now(),
            payload: r#"{"a": [1, 2]}"#.into(),
        };
        let body: serde_json::Value = serde_json::from_str(&event.body()).unwrap();
        assert_eq!(body["event_id"], "e\"1");
        assert_eq!(body["payload"]["a"][1], 2);
        assert_eq!(body["occurred_at"], serde_json::Value::Null);
        assert_eq!(body.as_object().unwrap().len(), 6);
    }
}
