//! The event codec on untrusted bytes (what a consumer reads from the bus): decoding never
//! panics, and whatever decodes re-encodes to bytes that decode to the same event and encode to
//! the same bytes again (decode -> encode -> decode is stable).

#![no_main]

use iaas_core::InfrastructureEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(event) = InfrastructureEvent::from_json(bytes) else {
        return;
    };
    let encoded = event.to_json();
    let again = match InfrastructureEvent::from_json(&encoded) {
        Ok(again) => again,
        Err(err) => panic!("an event this crate encoded does not decode: {err}"),
    };
    assert_eq!(again, event, "decode -> encode -> decode changed the event");
    assert_eq!(again.to_json(), encoded, "encoding is not stable");
});
