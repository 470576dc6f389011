//! The messages the processor holds (received, not yet deleted or released), by
//! receipt handle, with when SQS would make each visible again; and the two budgets
//! that bound them (backpressure on the pollers): a number of messages and a number
//! of bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::Gauge;

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The byte budget counts in KiB, so a budget of gigabytes fits a semaphore's permits.
pub(super) const UNIT: usize = 1024;

/// What a held message costs, measured with bodies of the largest size: four copies
/// of its body at the peak (the SQS response and the body read from it, the payload
/// text kept for the commit, the batch's encoded statement), plus bookkeeping.
pub(super) fn cost_units(body_len: usize) -> u32 {
    ((4 * body_len + UNIT) / UNIT) as u32
}

struct Entry {
    visible_until: Instant,
    /// Units of the byte budget this message holds.
    units: u32,
}

/// Messages received and not yet deleted or released, by receipt handle, with when
/// SQS will make them visible again; and the slots and byte units that bound them.
pub(super) struct Held {
    pub(super) slots: Arc<Semaphore>,
    pub(super) bytes: Arc<Semaphore>,
    entries: Mutex<Entries>,
    /// `event_processor_in_flight` and `event_processor_held_bytes`, looked up once.
    gauges: (Gauge, Gauge),
}

/// The held messages, and the byte units they hold in all (kept, not summed per call).
#[derive(Default)]
struct Entries {
    by_handle: HashMap<String, Entry, foldhash::fast::RandomState>,
    units: usize,
}

impl Held {
    /// At most `capacity` messages and `budget_bytes` bytes (see [`cost_units`]).
    pub(super) fn new(capacity: usize, budget_bytes: usize) -> Self {
        let units = budget_bytes / UNIT;
        metrics::gauge!("event_processor_in_flight_limit").set(capacity as f64);
        metrics::gauge!("event_processor_held_bytes_limit").set((units * UNIT) as f64);
        Held {
            slots: Arc::new(Semaphore::new(capacity)),
            bytes: Arc::new(Semaphore::new(units)),
            entries: Mutex::default(),
            gauges: (metrics::gauge!("event_processor_in_flight"), metrics::gauge!("event_processor_held_bytes")),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.lock().expect("held lock").by_handle.len()
    }

    /// Starts holding messages: `(receipt handle, units)`, each visible again at `until`.
    /// The caller has acquired (and forgotten) one slot and `units` byte units for each.
    pub(super) fn hold<'a>(&self, messages: impl IntoIterator<Item = (&'a str, u32)>, until: Instant) {
        let mut held = self.entries.lock().expect("held lock");
        for (handle, units) in messages {
            held.units += units as usize;
            held.by_handle.insert(handle.to_owned(), Entry { visible_until: until, units });
        }
        self.report(&held);
    }

    /// Forgets messages that were deleted or released, freeing their slots and bytes.
    pub(super) fn let_go<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>) {
        let mut held = self.entries.lock().expect("held lock");
        let (mut freed, mut units) = (0, 0);
        for handle in receipt_handles {
            if let Some(entry) = held.by_handle.remove(handle) {
                freed += 1;
                units += entry.units as usize;
            }
        }
        held.units -= units;
        self.report(&held);
        drop(held);
        self.slots.add_permits(freed);
        self.bytes.add_permits(units);
    }

    fn report(&self, held: &Entries) {
        self.gauges.0.set(held.by_handle.len() as f64);
        self.gauges.1.set((held.units * UNIT) as f64);
    }

    /// Receipt handles that become visible before `before`, with when they do. Nothing
    /// changes until SQS confirms an extension ([`Held::extended`]).
    pub(super) fn due(&self, before: Instant) -> Vec<(String, Instant)> {
        let held = self.entries.lock().expect("held lock");
        held.by_handle
            .iter()
            .filter(|(_, e)| e.visible_until < before)
            .map(|(h, e)| (h.clone(), e.visible_until))
            .collect()
    }

    /// Records that SQS confirmed these messages invisible until `until` (messages let
    /// go meanwhile stay forgotten).
    pub(super) fn extended<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>, until: Instant) {
        let mut held = self.entries.lock().expect("held lock");
        for handle in receipt_handles {
            if let Some(entry) = held.by_handle.get_mut(handle) {
                entry.visible_until = entry.visible_until.max(until);
            }
        }
    }

    pub(super) fn all(&self) -> Vec<String> {
        self.entries.lock().expect("held lock").by_handle.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_extension_counts_only_once_confirmed_and_letting_go_frees_slots_and_bytes() {
        let held = Held::new(10, 64 * UNIT);
        let now = Instant::now();
        let units = cost_units(5 * UNIT); // four copies of 5 KiB, plus one
        assert_eq!(units, 21);
        held.slots.try_acquire_many(2).unwrap().forget();
        held.bytes.try_acquire_many(2 * units).unwrap().forget();
        held.hold([("a", units), ("b", units)], now + Duration::from_secs(1));
        assert_eq!(held.bytes.available_permits(), 64 - 42);

        let due = held.due(now + Duration::from_secs(2));
        assert_eq!(due.len(), 2);
        // Asking does not move a deadline: only a confirmed extension does.
        assert_eq!(held.due(now + Duration::from_secs(2)).len(), 2);
        held.extended(["a"], now + Duration::from_secs(30));
        let due: Vec<String> = held.due(now + Duration::from_secs(2)).into_iter().map(|(h, _)| h).collect();
        assert_eq!(due, ["b"]);

        held.let_go(["a", "b", "unknown"]);
        assert_eq!((held.len(), held.slots.available_permits(), held.bytes.available_permits()), (0, 10, 64));
        // A message let go is not brought back by a late confirmation.
        held.extended(["a"], now + Duration::from_secs(60));
        assert_eq!(held.len(), 0);
    }
}
