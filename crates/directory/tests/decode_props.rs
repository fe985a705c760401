//! Decoders never panic on arbitrary bytes, and merging is a CRDT: commutative, associative
//! and idempotent (any order, any number of times, the same store).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use gossipdir_directory::sample::{keypair, specialist};
use gossipdir_directory::{Limits, RawRecord, Record, RecordId, Store};
use proptest::prelude::*;
use serde_bytes::ByteBuf;

const NOW: u64 = 1_800_000_000_000;

/// Versions of a few keys: several seqs per key, conflicting versions at equal seqs, and
/// records that are already expired at NOW.
fn pool() -> &'static Vec<Record> {
    static POOL: OnceLock<Vec<Record>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut out = Vec::new();
        for owner in 0..4u64 {
            let kp = keypair(owner);
            for name in ["a", "b"] {
                for seq in 1..=3 {
                    for variant in ["x", "y"] {
                        out.push(specialist(
                            &kp,
                            name,
                            &[variant],
                            seq,
                            NOW - 1000,
                            3_600_000,
                        ));
                    }
                }
                out.push(specialist(
                    &kp,
                    name,
                    &["old"],
                    9,
                    NOW - 7_200_000,
                    3_600_000,
                ));
            }
        }
        out
    })
}

fn ids(store: &Store) -> BTreeSet<RecordId> {
    store.iter().map(|r| r.id()).collect()
}

fn merged(records: &[usize]) -> Store {
    let mut s = Store::new(Limits::default());
    for &i in records {
        let _ = s.merge(pool()[i].clone(), NOW);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn record_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Record::decode(&bytes, &Limits::default());
        let _ = Record::from_raw(RawRecord(ByteBuf::from(bytes.clone()), ByteBuf::from(bytes)), &Limits::default());
    }

    #[test]
    fn mutated_record_never_panics_and_is_never_accepted_with_another_body(
        pos in 0usize..400, flip in 1u8..=255,
    ) {
        let r = &pool()[0];
        let mut bytes = r.encode();
        let pos = pos % bytes.len();
        bytes[pos] ^= flip;
        if let Ok(m) = Record::decode(&bytes, &Limits::default()) {
            let mut s = Store::new(Limits::default());
            if s.merge(m.clone(), NOW).is_ok() {
                // Only a change in the signature's unused encoding could pass; the body is r's.
                prop_assert_eq!(m.body(), r.body());
            }
        }
    }

    #[test]
    fn merge_is_order_independent_and_idempotent(
        order in Just((0..pool().len()).collect::<Vec<_>>()).prop_shuffle(),
        repeats in proptest::collection::vec(0..pool().len(), 0..40),
    ) {
        let reference = merged(&(0..pool().len()).collect::<Vec<_>>());
        let mut with_repeats = order.clone();
        with_repeats.extend(repeats);
        prop_assert_eq!(ids(&merged(&order)), ids(&reference));
        prop_assert_eq!(ids(&merged(&with_repeats)), ids(&reference));
    }

    #[test]
    fn merge_is_associative(split in 0..48usize, order in Just((0..pool().len()).collect::<Vec<_>>()).prop_shuffle()) {
        // (A ∪ B) merged into C equals A merged into (B ∪ C): store contents merged as records.
        let split = split.min(order.len());
        let (a, b) = order.split_at(split);
        let left = merged(a);
        let mut right = merged(b);
        for r in left.iter() {
            let _ = right.merge((**r).clone(), NOW);
        }
        let all = merged(&order);
        prop_assert_eq!(ids(&right), ids(&all));
    }
}
