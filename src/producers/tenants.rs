//! Generated tenants for load runs (`producers --clients N`).

use crate::registry::{ClientEntry, RegistryFile, SubscriptionEntry};

/// Registry data for `n` extra tenants `client-1..=n`, each subscribed to every event
/// type of `base` (used by the producers' `--clients`).
pub fn tenants(base: &RegistryFile, n: usize) -> RegistryFile {
    let types: std::collections::BTreeSet<&str> = base.event_types.iter().map(|t| t.name.as_str()).collect();
    let known: std::collections::HashSet<&str> = base.clients.iter().map(|c| c.id.as_str()).collect();
    let mut file = RegistryFile::default();
    for i in 1..=n {
        let id = format!("client-{i}");
        if known.contains(id.as_str()) {
            continue;
        }
        file.clients.push(ClientEntry { id: id.clone(), name: format!("Generated tenant {i}") });
        for t in &types {
            file.subscriptions.push(SubscriptionEntry { client: id.clone(), event_type: (*t).to_owned() });
        }
    }
    file
}
