//! Any body SQS could deliver must classify without panicking, and whatever it becomes
//! must be storable: no U+0000 where PostgreSQL would refuse it, ids within limits.
#![no_main]

use std::sync::LazyLock;

use event_processor::validation::{find_nul, MAX_ID_CHARS};
use event_processor::registry::{Registry, RegistryFile};
use event_processor::validation::{classify, numbers_fit_numeric, Verdict};
use libfuzzer_sys::fuzz_target;

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::from_file(&RegistryFile::demo()).unwrap());

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    match classify(&body, "fuzz-message-id", &REGISTRY) {
        Verdict::Accepted(e) => {
            let payload: serde_json::Value = serde_json::from_str(&e.payload).expect("an accepted payload is JSON");
            assert!(find_nul(&payload).is_none(), "accepted a payload jsonb would refuse");
            assert!(numbers_fit_numeric(&e.payload), "a number numeric would refuse");
            for id in [&e.client_id, &e.event_type, &e.event_id] {
                assert!(!id.contains('\0') && !id.is_empty() && id.chars().count() <= MAX_ID_CHARS);
            }
            assert!(e.version >= 1);
        }
        Verdict::Rejected(r) => {
            assert!(find_nul(&r.rejection.detail).is_none(), "a detail jsonb would refuse");
            let ids = [&r.identity.client_id, &r.identity.event_type, &r.identity.event_id];
            assert!(ids.iter().all(|id| id.as_ref().is_none_or(|s| !s.contains('\0'))));
        }
    }
});
