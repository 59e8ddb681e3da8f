//! Parses arbitrary bytes as an external (push) event, as a webhook
//! receiver or JetStream consumer of ours would: never panics, and an event
//! that parses re-serializes, also under any size limit, to JSON that parses
//! back with the same id and event type, within the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push::external_event::MIN_EVENT_BYTES;
use push::ExternalEvent;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, json)) = data.split_first() else { return };
    let Ok(event) = ExternalEvent::from_json(json) else { return };
    let again = ExternalEvent::from_json(&event.to_json()).expect("our own JSON parses");
    assert_eq!(again, event);
    let max = MIN_EVENT_BYTES + usize::from(limit) * 16;
    let bounded = event.to_json_bounded(max);
    let cut = ExternalEvent::from_json(&bounded).expect("bounded JSON parses");
    assert_eq!((cut.id.as_str(), cut.event), (event.id.as_str(), event.event));
    // Fields we never shorten (id, user, mailbox) can exceed any limit on
    // hand-made input; ours are 32 hex digits and store-bounded names, so
    // check the limit only for events like ours.
    let fixed = event.id.len() + event.user.len() + event.mailbox.len() + event.old_mailbox.as_deref().map_or(0, str::len);
    if fixed < 256 {
        assert!(bounded.len() <= max, "{} > {max}", bounded.len());
    }
});
