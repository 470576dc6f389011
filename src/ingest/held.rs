//! The messages the processor holds (received, not yet deleted or released), by
//! receipt handle, with when SQS would make each visible again; and the slots that
//! bound how many there are (backpressure on the pollers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Messages received and not yet deleted or released, by receipt handle, with when
/// SQS will make them visible again; and the slots that bound how many there are.
pub(super) struct Held {
    pub(super) slots: Arc<Semaphore>,
    visible_until: Mutex<HashMap<String, Instant>>,
}

impl Held {
    pub(super) fn new(capacity: usize) -> Self {
        Held { slots: Arc::new(Semaphore::new(capacity)), visible_until: Mutex::default() }
    }

    pub(super) fn len(&self) -> usize {
        self.visible_until.lock().expect("held lock").len()
    }

    pub(super) fn hold<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>, until: Instant) {
        let mut held = self.visible_until.lock().expect("held lock");
        held.extend(receipt_handles.into_iter().map(|h| (h.to_owned(), until)));
        metrics::gauge!("event_processor_in_flight").set(held.len() as f64);
    }

    /// Forgets messages that were deleted or released, freeing their slots.
    pub(super) fn let_go<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>) {
        let mut held = self.visible_until.lock().expect("held lock");
        let freed = receipt_handles.into_iter().filter(|h| held.remove(*h).is_some()).count();
        metrics::gauge!("event_processor_in_flight").set(held.len() as f64);
        drop(held);
        self.slots.add_permits(freed);
    }

    /// Receipt handles that become visible before `before`, now marked visible until `until`.
    pub(super) fn due(&self, before: Instant, until: Instant) -> Vec<String> {
        let mut held = self.visible_until.lock().expect("held lock");
        held.iter_mut()
            .filter(|(_, t)| **t < before)
            .map(|(handle, t)| {
                *t = until;
                handle.clone()
            })
            .collect()
    }

    pub(super) fn all(&self) -> Vec<String> {
        self.visible_until.lock().expect("held lock").keys().cloned().collect()
    }
}
