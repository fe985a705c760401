//! Records and the merge rule: what is accepted, what is rejected and why, and that a
//! rejection leaves the store unchanged.

use gossipdir_directory::sample::{keypair, node, specialist};
use gossipdir_directory::{
    Body, Content, Issuer, Limits, NodeInfo, RawRecord, Record, Rejection, Specialist, Store,
};
use serde_bytes::ByteBuf;

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn store() -> Store {
    Store::new(Limits::default())
}

/// Merges `record` and checks the rejection reason and that nothing changed.
fn assert_rejected(store: &mut Store, record: Record, reason: Rejection) {
    let (version, len) = (store.version(), store.len());
    assert_eq!(store.merge(record, NOW).map(|_| ()), Err(reason));
    assert_eq!(
        (store.version(), store.len()),
        (version, len),
        "store changed"
    );
}

fn body_of(kp: &gossipdir_directory::Keypair, name: &str, seq: u64) -> Body {
    Body {
        owner: kp.public().to_peer_id(),
        name: name.into(),
        seq,
        issued_at: NOW,
        expires_at: NOW + HOUR,
        withdrawn: false,
        content: Content::Specialist(Specialist {
            capabilities: vec!["ocr".into()],
            endpoint: None,
            meta: Vec::new(),
            node_lease: false,
        }),
    }
}

#[test]
fn signed_record_round_trips_through_its_encoding() {
    let r = specialist(&keypair(1), "a", &["x", "y"], 3, NOW, HOUR);
    let decoded = Record::decode(&r.encode(), &Limits::default()).unwrap();
    assert_eq!(decoded, r);
    assert_eq!(decoded.id(), r.id());
    decoded.verify_signature().unwrap();
}

#[test]
fn valid_record_is_accepted_and_queryable() {
    let mut s = store();
    s.merge(specialist(&keypair(1), "a", &["x", "y"], 1, NOW, HOUR), NOW)
        .unwrap();
    s.merge(specialist(&keypair(2), "b", &["x"], 1, NOW, HOUR), NOW)
        .unwrap();
    s.merge(node(&keypair(3), 1, NOW, HOUR), NOW).unwrap();
    assert_eq!(s.query(&["x".into()], NOW).len(), 2);
    assert_eq!(s.query(&["x".into(), "y".into()], NOW).len(), 1);
    assert_eq!(s.query(&["z".into()], NOW).len(), 0);
    assert_eq!(
        s.query(&[], NOW).len(),
        2,
        "node records are not specialists"
    );
    assert_eq!(s.nodes().len(), 1);
}

#[test]
fn forged_record_signed_by_another_key_is_rejected() {
    // Claims owner 1, signed by key 2.
    let body = body_of(&keypair(1), "a", 1);
    let mut s = store();
    let err = Record::sign(body.clone(), &keypair(2), &Limits::default());
    assert_eq!(err.map(|_| ()), Err(Rejection::BadSignature));
    // Build the forgery by hand: a valid signature of key 2 over owner 1's body.
    let honest = Record::sign(body, &keypair(1), &Limits::default()).unwrap();
    let other = specialist(&keypair(2), "a", &["ocr"], 1, NOW, HOUR);
    let RawRecord(body_bytes, _) = honest.to_raw();
    let RawRecord(_, foreign_sig) = other.to_raw();
    let forged = Record::from_raw(RawRecord(body_bytes, foreign_sig), &Limits::default()).unwrap();
    assert_rejected(&mut s, forged, Rejection::BadSignature);
}

#[test]
fn tampered_record_is_rejected() {
    let r = specialist(&keypair(1), "a", &["ocr"], 1, NOW, HOUR);
    let RawRecord(body, sig) = r.to_raw();
    let limits = Limits::default();
    let mut s = store();
    // Flip every byte position in turn: each tampered copy is refused somewhere.
    for i in 0..body.len() {
        let mut bytes = body.to_vec();
        bytes[i] ^= 0x01;
        match Record::from_raw(RawRecord(ByteBuf::from(bytes), sig.clone()), &limits) {
            Err(_) => {}
            Ok(tampered) => {
                let (version, len) = (s.version(), s.len());
                assert!(
                    s.merge(tampered, NOW).is_err(),
                    "tampered byte {i} accepted"
                );
                assert_eq!((s.version(), s.len()), (version, len));
            }
        }
    }
    assert!(s.is_empty());
}

#[test]
fn tampered_signature_is_rejected() {
    let r = specialist(&keypair(1), "a", &["ocr"], 1, NOW, HOUR);
    let RawRecord(body, sig) = r.to_raw();
    let mut sig = sig.to_vec();
    sig[10] ^= 0x80;
    let bad = Record::from_raw(RawRecord(body, ByteBuf::from(sig)), &Limits::default()).unwrap();
    assert_rejected(&mut store(), bad, Rejection::BadSignature);
}

#[test]
fn expired_record_is_rejected() {
    let r = specialist(&keypair(1), "a", &["ocr"], 1, NOW - 2 * HOUR, HOUR);
    assert_rejected(&mut store(), r, Rejection::Expired);
}

#[test]
fn far_future_expiry_is_rejected() {
    let limits = Limits::default();
    let r = specialist(
        &keypair(1),
        "a",
        &["ocr"],
        1,
        NOW,
        limits.max_ttl_ms + limits.clock_skew_ms + 1,
    );
    assert_rejected(&mut store(), r, Rejection::TooFarFuture);
    // Exactly at the horizon is fine.
    let r = specialist(
        &keypair(1),
        "a",
        &["ocr"],
        1,
        NOW,
        limits.max_ttl_ms + limits.clock_skew_ms,
    );
    store().merge(r, NOW).unwrap();
}

#[test]
fn metadata_keys_must_be_sorted_and_unique() {
    let kp = keypair(1);
    let limits = Limits::default();
    let with_meta = |meta: Vec<(&str, &str)>| {
        let mut b = body_of(&kp, "a", 1);
        if let Content::Specialist(s) = &mut b.content {
            s.meta = meta
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        Record::sign(b, &kp, &limits).map(|r| r.body().clone())
    };
    let sorted = with_meta(vec![("a", "1"), ("b", "2")]);
    assert!(sorted.is_ok());
    assert_eq!(
        with_meta(vec![("b", "2"), ("a", "1")]),
        Err(Rejection::BadMeta)
    );
    assert_eq!(
        with_meta(vec![("a", "1"), ("a", "2")]),
        Err(Rejection::BadMeta)
    );
    // The wire form is a CBOR map: a decoded record's pairs come back sorted.
    let record = Record::sign(sorted.unwrap(), &kp, &limits).unwrap();
    let back = Record::decode(&record.encode(), &limits).unwrap();
    assert_eq!(back.body(), record.body());
}

#[test]
fn oversized_records_are_refused_at_signing_and_at_decoding() {
    let kp = keypair(1);
    let limits = Limits::default();
    let mut body = body_of(&kp, "a", 1);
    type Mutation = Box<dyn Fn(&mut Specialist)>;
    let cases: Vec<(Mutation, Rejection)> = vec![
        (
            Box::new(|s| s.capabilities = (0..33).map(|i| format!("c{i}")).collect()),
            Rejection::TooManyCapabilities,
        ),
        (
            Box::new(|s| s.capabilities = vec!["x".repeat(65)]),
            Rejection::BadCapability,
        ),
        (
            Box::new(|s| {
                s.meta.push(("k".into(), "v".repeat(1024)));
            }),
            Rejection::MetaTooLarge,
        ),
        (
            Box::new(|s| s.endpoint = Some("e".repeat(600))),
            Rejection::BadEndpoint,
        ),
    ];
    let mut empty = body.clone();
    if let Content::Specialist(s) = &mut empty.content {
        s.capabilities = vec![String::new()];
    }
    assert_eq!(
        Record::sign(empty, &kp, &limits).map(|_| ()),
        Err(Rejection::BadCapability)
    );
    for (mutate, reason) in cases {
        let mut b = body.clone();
        if let Content::Specialist(s) = &mut b.content {
            mutate(s);
        }
        assert_eq!(
            Record::sign(b.clone(), &kp, &limits).map(|_| ()),
            Err(reason)
        );
        // The same body signed under loose limits is refused when received.
        let loose = Limits {
            max_capabilities: 1000,
            max_capability_bytes: 1000,
            max_meta_bytes: 100_000,
            max_endpoint_bytes: 10_000,
            max_record_bytes: 1 << 20,
            ..Limits::default()
        };
        let r = Record::sign(b, &kp, &loose).unwrap();
        assert!(Record::from_raw(r.to_raw(), &limits).is_err());
    }
    // Too many addresses on a node record.
    body.name = String::new();
    body.content = Content::Node(NodeInfo {
        addrs: (0..17)
            .map(|i| format!("/ip4/10.0.0.{i}/tcp/1").parse().unwrap())
            .collect(),
        protocol: "gossipdir/1".into(),
    });
    assert_eq!(
        Record::sign(body, &kp, &limits).map(|_| ()),
        Err(Rejection::TooManyAddrs)
    );
    // A whole record over 4 KiB.
    let huge = RawRecord(
        ByteBuf::from(vec![0u8; 4000]),
        ByteBuf::from(vec![0u8; 200]),
    );
    assert_eq!(
        Record::from_raw(huge, &limits).map(|_| ()),
        Err(Rejection::TooLarge)
    );
}

#[test]
fn replayed_older_version_is_rejected() {
    let kp = keypair(1);
    let mut s = store();
    let v1 = specialist(&kp, "a", &["old"], 1, NOW, HOUR);
    let v2 = specialist(&kp, "a", &["new"], 2, NOW, HOUR);
    s.merge(v1.clone(), NOW).unwrap();
    s.merge(v2.clone(), NOW).unwrap();
    assert_rejected(&mut s, v1, Rejection::Stale);
    assert_rejected(&mut s, v2, Rejection::Duplicate);
    assert_eq!(s.query(&["new".into()], NOW).len(), 1);
    assert!(s.query(&["old".into()], NOW).is_empty());
}

#[test]
fn conflicting_versions_with_one_seq_resolve_to_the_larger_id_in_any_order() {
    let kp = keypair(1);
    let a = specialist(&kp, "a", &["one"], 5, NOW, HOUR);
    let b = specialist(&kp, "a", &["two"], 5, NOW, HOUR);
    let winner = a.id().max(b.id());
    let (a_copy, b_copy, b_id) = (a.clone(), b.clone(), b.id());
    let mut s1 = store();
    s1.merge(a.clone(), NOW).ok();
    s1.merge(b.clone(), NOW).ok();
    let mut s2 = store();
    s2.merge(b, NOW).ok();
    s2.merge(a, NOW).ok();
    let mut s3 = store();
    let results = s3.merge_batch(vec![a_copy.clone(), b_copy.clone(), a_copy, b_copy], NOW);
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1 + usize::from(winner == b_id)
    );
    for s in [&s1, &s2] {
        assert_eq!(s.iter().next().unwrap().id(), winner);
        assert_eq!(s.stats().conflicts, 1);
    }
    assert_eq!(s3.iter().next().unwrap().id(), winner);
}

#[test]
fn non_canonical_encoding_is_rejected() {
    let r = specialist(&keypair(1), "a", &["ocr"], 1, NOW, HOUR);
    let RawRecord(body, sig) = r.to_raw();
    // Re-encode seq (a small integer) in a longer form: same value, different bytes.
    let mut value: ciborium::Value = ciborium::from_reader(&body[..]).unwrap();
    let mut bytes = Vec::new();
    ciborium::into_writer(&value, &mut bytes).unwrap();
    assert_eq!(bytes, body.to_vec(), "a value round trip is canonical");
    if let ciborium::Value::Array(items) = &mut value {
        items.push(ciborium::Value::Null); // An extra trailing field.
    }
    let mut extended = Vec::new();
    ciborium::into_writer(&value, &mut extended).unwrap();
    let result = Record::from_raw(
        RawRecord(ByteBuf::from(extended), sig.clone()),
        &Limits::default(),
    );
    assert!(matches!(
        result,
        Err(Rejection::Malformed | Rejection::NonCanonical)
    ));
    // Trailing garbage after a valid body.
    let mut trailing = body.to_vec();
    trailing.push(0);
    let result = Record::from_raw(RawRecord(ByteBuf::from(trailing), sig), &Limits::default());
    assert_eq!(result.map(|_| ()), Err(Rejection::NonCanonical));
}

#[test]
fn withdrawal_replaces_then_expires_and_the_old_version_never_returns() {
    let mut issuer = Issuer::new(keypair(7), Limits::default());
    let v1 = issuer
        .specialist(
            "svc",
            Specialist {
                capabilities: vec!["x".into()],
                ..Default::default()
            },
            HOUR,
            NOW,
        )
        .unwrap();
    let gone = issuer.withdrawal("svc", 60_000, NOW + 1000).unwrap();
    assert!(gone.seq() > v1.seq());
    assert!(
        gone.expires_at() >= v1.expires_at(),
        "a withdrawal outlives what it withdraws"
    );
    let mut s = store();
    s.merge(v1.clone(), NOW).unwrap();
    s.merge(gone.clone(), NOW + 1000).unwrap();
    assert!(s.query(&["x".into()], NOW + 1000).is_empty());
    assert_eq!(s.len(), 1, "the withdrawal is held until it expires");
    assert_eq!(
        s.merge(v1.clone(), NOW + 2000).map(|_| ()),
        Err(Rejection::Stale)
    );
    // At the withdrawal's expiry both it and any copy of v1 are gone for good.
    let end = gone.expires_at();
    assert_eq!(s.expire(end), 1);
    assert!(s.is_empty());
    assert_eq!(s.merge(v1, end).map(|_| ()), Err(Rejection::Expired));
}

#[test]
fn issuer_seq_never_goes_backwards_even_when_the_clock_does() {
    let mut issuer = Issuer::new(keypair(8), Limits::default());
    let a = issuer
        .node_record(
            NodeInfo {
                addrs: vec![],
                protocol: "gossipdir/1".into(),
            },
            HOUR,
            NOW,
        )
        .unwrap();
    let b = issuer
        .node_record(
            NodeInfo {
                addrs: vec![],
                protocol: "gossipdir/1".into(),
            },
            HOUR,
            NOW - 50_000,
        )
        .unwrap();
    assert!(b.seq() > a.seq());
    // A restarted issuer that restores its state continues above it.
    let mut restarted = Issuer::new(keypair(8), Limits::default());
    for (name, issued) in issuer.issued() {
        restarted.restore(name, issued);
    }
    let c = restarted
        .node_record(
            NodeInfo {
                addrs: vec![],
                protocol: "gossipdir/1".into(),
            },
            HOUR,
            NOW - 60_000,
        )
        .unwrap();
    assert!(c.seq() > b.seq());
}

#[test]
fn expiry_removes_exactly_the_expired_records() {
    let mut s = store();
    for i in 0..100u64 {
        s.merge(
            specialist(&keypair(i), "a", &["x"], 1, NOW, 1000 + i * 1000),
            NOW,
        )
        .unwrap();
    }
    assert_eq!(s.expire(NOW + 10_500), 10);
    assert_eq!(s.len(), 90);
    assert_eq!(s.query(&["x".into()], NOW + 10_500).len(), 90);
    assert_eq!(s.stats().expired, 10);
}

#[test]
fn store_and_owner_caps_hold() {
    let limits = Limits {
        max_records: 10,
        max_records_per_owner: 3,
        ..Limits::default()
    };
    let mut s = Store::new(limits);
    let kp = keypair(1);
    for i in 0..3 {
        s.merge(specialist(&kp, &format!("s{i}"), &["x"], 1, NOW, HOUR), NOW)
            .unwrap();
    }
    assert_eq!(
        s.merge(specialist(&kp, "s3", &["x"], 1, NOW, HOUR), NOW)
            .map(|_| ()),
        Err(Rejection::OwnerFull)
    );
    // A newer version of a held key is still accepted at the cap.
    s.merge(specialist(&kp, "s0", &["y"], 2, NOW, HOUR), NOW)
        .unwrap();
    for i in 2..9 {
        s.merge(specialist(&keypair(i), "a", &["x"], 1, NOW, HOUR), NOW)
            .unwrap();
    }
    assert_eq!(s.len(), 10);
    assert_eq!(
        s.merge(specialist(&keypair(99), "a", &["x"], 1, NOW, HOUR), NOW)
            .map(|_| ()),
        Err(Rejection::StoreFull)
    );
}

#[test]
fn batch_merge_finds_the_one_forgery_among_valid_records() {
    let mut records: Vec<Record> = (0..20)
        .map(|i| specialist(&keypair(i), "a", &["x"], 1, NOW, HOUR))
        .collect();
    let RawRecord(body, _) = records[7].to_raw();
    let RawRecord(_, other_sig) = records[8].to_raw();
    records[7] = Record::from_raw(RawRecord(body, other_sig), &Limits::default()).unwrap();
    let mut s = store();
    let results = s.merge_batch(records, NOW);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 7, "record {i}");
    }
    assert_eq!(
        results[7].as_ref().map(|_| ()),
        Err(&Rejection::BadSignature)
    );
    assert_eq!(s.len(), 19);
}

/// A specialist kept alive by its owner's node record.
fn leased(kp: &gossipdir_directory::Keypair, name: &str, seq: u64, at: u64) -> Record {
    let mut body = body_of(kp, name, seq);
    body.issued_at = at;
    body.expires_at = at + HOUR;
    if let Content::Specialist(s) = &mut body.content {
        s.node_lease = true;
    }
    Record::sign(body, kp, &Limits::default()).unwrap()
}

#[test]
fn a_leased_specialist_is_listed_only_while_its_owner_node_record_is_live() {
    let kp = keypair(1);
    let mut s = store();
    let ocr = || vec!["ocr".to_owned()];
    // An hour-long specialist, kept alive by a node record refreshed every minute.
    s.merge(leased(&kp, "svc", 1, NOW), NOW).unwrap();
    assert!(
        s.query(&ocr(), NOW).is_empty(),
        "no node record of its owner yet: not listed"
    );
    // Records arrive in any order: the node record coming later lists it.
    s.merge(node(&kp, 1, NOW, 60_000), NOW).unwrap();
    assert_eq!(s.query(&ocr(), NOW).len(), 1);
    // A refreshed node record keeps it listed past the first node record's expiry.
    s.merge(node(&kp, 2, NOW + 20_000, 60_000), NOW + 20_000)
        .unwrap();
    assert_eq!(s.query(&ocr(), NOW + 70_000).len(), 1);
    // No further refresh: the owner is gone once its node record expires, although the
    // specialist's own lifetime runs on. It stays held, so every store holds the same set.
    let gone = NOW + 80_000;
    assert!(s.query(&ocr(), gone).is_empty());
    assert!(s.query(&[], gone).is_empty());
    assert_eq!(s.expire(gone), 1, "only the node record expired");
    assert_eq!(s.len(), 1);
    assert!(s.query(&ocr(), gone).is_empty());
    // The owner comes back: listed again without re-issuing the specialist.
    s.merge(node(&kp, 3, gone, 60_000), gone).unwrap();
    assert_eq!(s.query(&ocr(), gone).len(), 1);
    // A specialist without the lease lives by its own lifetime alone.
    let other = keypair(2);
    s.merge(specialist(&other, "solo", &["ocr"], 1, gone, HOUR), gone)
        .unwrap();
    assert_eq!(s.query(&ocr(), gone).len(), 2);
}

#[test]
fn a_withdrawn_node_record_unlists_its_leased_specialists_at_once() {
    let mut issuer = Issuer::new(keypair(2), Limits::default());
    let info = NodeInfo {
        addrs: vec![],
        protocol: "gossipdir/1".into(),
    };
    let mut s = store();
    s.merge(issuer.node_record(info, 60_000, NOW).unwrap(), NOW)
        .unwrap();
    let spec = Specialist {
        capabilities: vec!["x".into()],
        node_lease: true,
        ..Default::default()
    };
    s.merge(issuer.specialist("svc", spec, HOUR, NOW).unwrap(), NOW)
        .unwrap();
    assert_eq!(s.query(&["x".into()], NOW).len(), 1);
    s.merge(issuer.withdrawal("", 60_000, NOW + 1).unwrap(), NOW + 1)
        .unwrap();
    assert!(s.query(&["x".into()], NOW + 1).is_empty());
    assert!(s.nodes().is_empty());
}
