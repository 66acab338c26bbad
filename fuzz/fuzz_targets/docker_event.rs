//! Engine events as the watcher reads them: an arbitrary bollard `EventMessage` (decoded from
//! the fuzz bytes as JSON, the engine's wire format) goes through the watcher's mapping
//! (`status_for_event` on its action and attributes, `role_decides_status` on its role label)
//! without panicking, and the mapping's invariants hold: an action nobody maps gives no status,
//! and the suffix after `:` never changes the result.

#![no_main]

use bollard::models::EventMessage;
use iaas_core::runtime::{LABEL_ROLE, role_decides_status};
use iaas_docker::status_for_event;
use libfuzzer_sys::fuzz_target;

const MAPPED: [&str; 8] = ["start", "restart", "unpause", "stop", "pause", "die", "oom", "destroy"];

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = serde_json::from_slice::<EventMessage>(bytes) else {
        return;
    };
    let action = message.action.unwrap_or_default();
    let actor = message.actor.unwrap_or_default();
    let attributes = actor.attributes.unwrap_or_default();
    let role = attributes.get(LABEL_ROLE).cloned().unwrap_or_default();
    let _ = role_decides_status(&role);
    let status = status_for_event(&action, &attributes);
    let base = action.split(':').next().unwrap_or_default().trim();
    if !MAPPED.contains(&base) {
        assert_eq!(status, None, "unmapped action {action:?} gave {status:?}");
    }
    assert_eq!(status, status_for_event(base, &attributes), "the suffix of {action:?} mattered");
});
