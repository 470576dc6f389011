//! The store's last line of defence: a row PostgreSQL refuses is isolated.

use chrono::Utc;
use event_processor::store::{Arrival, Classified};
use event_processor::validation::{Event, Identity, Reason, Rejected, Rejection, Verdict};

use crate::harness::TestEnv;

fn accepted(event_id: &str, payload: serde_json::Value) -> Classified {
    Classified {
        arrival: Arrival {
            message_id: format!("sqs-{event_id}"),
            body: "{}".into(),
            receive_count: 1,
            sent_at: None,
            received_at: Utc::now(),
        },
        verdict: Verdict::Accepted(Event {
            client_id: "client-1".into(),
            event_id: event_id.into(),
            event_type: "user-app".into(),
            version: 1,
            payload: payload.to_string().into(),
            occurred_at: None,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_postgres_refuses_is_split_out_as_unstorable_and_the_rest_commits() {
    let env = TestEnv::new().await;
    // Validation would catch this; bypass it to prove the store defends itself too.
    let mut batch: Vec<Classified> = (0..5).map(|i| accepted(&format!("ok-{i}"), serde_json::json!("fine"))).collect();
    batch.insert(2, accepted("bad", serde_json::json!("nul \u{0} inside")));
    let outcome = env.store.commit_batch(&mut batch).await.unwrap();
    assert_eq!((outcome.stored, outcome.unstorable, outcome.rejected), (5, 1, 1));
    assert_eq!(batch[2].verdict.reason(), Some(Reason::Unstorable));
    assert_eq!(env.count("SELECT count(*) FROM message").await, 5);
    assert_eq!(
        env.count("SELECT count(*) FROM rejected_message WHERE reason = 'unstorable' AND event_id = 'bad'").await,
        1
    );

    // Committing the same batch again is all duplicates, and still a success.
    let again = env.store.commit_batch(&mut batch).await.unwrap();
    assert_eq!((again.stored, again.duplicates, again.rejected), (0, 5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_received_twice_into_one_batch_under_both_verdicts_is_stored_once_as_its_event() {
    let env = TestEnv::new().await;
    // The registry changed between two receives of one message (its visibility expired).
    let event = accepted("twice", serde_json::json!("fine"));
    let rejection = Rejection::new(Reason::UnknownClient, "client 'client-1' is not registered");
    let rejected = Classified {
        arrival: event.arrival.clone(),
        verdict: Verdict::Rejected(Rejected { rejection, identity: Identity::default() }),
    };
    let mut batch = vec![rejected, event];
    let outcome = env.store.commit_batch(&mut batch).await.unwrap();
    assert_eq!((outcome.stored, outcome.rejected), (1, 0));
    assert_eq!(env.count("SELECT count(*) FROM message WHERE sqs_message_id = 'sqs-twice'").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM rejected_message").await, 0, "one message, one table");
}
