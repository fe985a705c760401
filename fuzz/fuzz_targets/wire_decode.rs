//! Every wire message decoder on arbitrary bytes: never a panic; what decodes re-encodes to
//! something that decodes to the same message.
#![no_main]

use gossip::wire::{self, MAX_MESSAGE_BYTES, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = wire::decode::<Request>(data, MAX_MESSAGE_BYTES) {
        let again: Request =
            wire::decode(&wire::encode(&request), MAX_MESSAGE_BYTES).expect("round trip");
        assert_eq!(again, request);
    }
    if let Ok(response) = wire::decode::<Response>(data, MAX_MESSAGE_BYTES) {
        let again: Response =
            wire::decode(&wire::encode(&response), MAX_MESSAGE_BYTES).expect("round trip");
        assert_eq!(again, response);
    }
});
