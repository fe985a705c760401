//! The record decoder, then the merge rule, on arbitrary bytes: never a panic, and a record
//! that is accepted always verifies.
#![no_main]

use directory::{Limits, Record, Store};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(record) = Record::decode(data, &limits) {
        assert_eq!(
            Record::decode(&record.encode(), &limits).as_ref(),
            Ok(&record)
        );
        let mut store = Store::new(limits);
        if store.merge(record.clone(), NOW).is_ok() {
            assert!(record.verify_signature().is_ok());
        }
    }
});
