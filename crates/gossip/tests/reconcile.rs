//! Reconciliation through the real engine and codec: both sides end with the union, equal
//! directories cost almost nothing, and large deltas are split under the message limit.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use directory::sample::{keypair, population, specialist};
use directory::{Limits, PeerId, Record, RecordId};
use gossipdir_gossip::pair::{differing, exchange};
use gossipdir_gossip::wire::{self, Request, Response};
use gossipdir_gossip::{Config, Engine, Input, Output};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000_000;

fn pool() -> &'static Vec<Record> {
    static POOL: OnceLock<Vec<Record>> = OnceLock::new();
    POOL.get_or_init(|| population(0, 10_000, NOW - 1000))
}

fn engine(n: u64, records: impl IntoIterator<Item = Record>) -> Engine {
    let config = Config {
        push_fanout: 0,
        limits: Limits {
            max_records: 200_000,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut e = Engine::new(keypair(1_000_000 + n).public().to_peer_id(), config, n);
    for r in records {
        e.handle(Input::Publish(r), NOW);
    }
    e
}

fn ids(e: &Engine) -> BTreeSet<RecordId> {
    e.store().iter().map(|r| r.id()).collect()
}

/// Exchanges until a starts no more (at most a few exchanges for huge deltas).
fn reconcile(a: &mut Engine, b: &mut Engine) -> (u64, u64) {
    let (mut sent, mut received) = (0, 0);
    for _ in 0..8 {
        let t = exchange(a, b, NOW).unwrap();
        sent += t.bytes_sent;
        received += t.bytes_received;
        if ids(a) == ids(b) {
            break;
        }
    }
    (sent, received)
}

#[test]
fn identical_directories_of_ten_thousand_settle_in_under_256_bytes_each_way() {
    let mut a = engine(1, pool().iter().cloned());
    let mut b = engine(2, pool().iter().cloned());
    let t = exchange(&mut a, &mut b, NOW).unwrap();
    assert!(t.bytes_sent <= 256, "sent {}", t.bytes_sent);
    assert!(t.bytes_received <= 256, "received {}", t.bytes_received);
    assert_eq!(t.round_trips, 1);
}

#[test]
fn a_small_difference_costs_the_records_plus_logarithmic_summaries() {
    let shared = &pool()[..9_990];
    let mut a = engine(
        1,
        shared
            .iter()
            .cloned()
            .chain(pool()[9_990..9_995].iter().cloned()),
    );
    let mut b = engine(
        2,
        shared
            .iter()
            .cloned()
            .chain(pool()[9_995..].iter().cloned()),
    );
    let t = exchange(&mut a, &mut b, NOW).unwrap();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.store().len(), 10_000);
    let records: u64 = pool()[9_990..].iter().map(|r| r.wire_len() as u64).sum();
    // d = 10 records each way in total; summaries are O(d log N): well under 8 KiB here.
    assert!(
        t.bytes_sent + t.bytes_received < records + 8 * 1024,
        "{t:?} for {records} record bytes"
    );
    assert!(t.round_trips <= 6, "{t:?}");
}

#[test]
fn a_slow_exchange_goes_on_while_each_step_is_answered_within_the_timeout() {
    // A lossy path answers every step in 60 % of the timeout: the exchange as a whole takes
    // longer than the timeout, and must still finish (each step has its own deadline).
    let (mut a, mut b) = differing(100, 10, NOW);
    let timeout = a.config().exchange_timeout_ms;
    let (a_id, b_id) = (a.local_peer(), b.local_peer());
    let mut now = NOW;
    let mut queue = a.handle(Input::SyncWith(b_id), now);
    let mut steps = 0;
    while let Some(output) = queue.pop() {
        let Output::Send {
            to,
            exchange,
            request,
        } = output
        else {
            continue;
        };
        assert_eq!(to, b_id);
        now += timeout * 6 / 10;
        // A round passes while the answer travels: it abandons only steps past their deadline.
        a.handle(Input::Tick, now);
        steps += 1;
        for answer in b.handle(
            Input::Request {
                from: a_id,
                channel: steps,
                request,
            },
            now,
        ) {
            if let Output::Respond { response, .. } = answer {
                queue.extend(a.handle(Input::Response { exchange, response }, now));
            }
        }
    }
    assert!(steps >= 3, "{steps} steps");
    assert!(now - NOW > timeout);
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.stats().exchanges_failed, 0);
}

#[test]
fn newer_versions_win_on_both_sides() {
    let kp = keypair(42);
    let old = specialist(&kp, "x", &["v1"], 1, NOW - 1000, 3_600_000);
    let new = specialist(&kp, "x", &["v2"], 2, NOW - 500, 3_600_000);
    let mut a = engine(1, [old]);
    let mut b = engine(2, [new.clone()]);
    exchange(&mut a, &mut b, NOW).unwrap();
    for e in [&a, &b] {
        assert_eq!(e.store().len(), 1);
        assert_eq!(e.store().iter().next().unwrap().id(), new.id());
    }
}

#[test]
fn a_delta_larger_than_one_message_is_split_and_nothing_is_dropped() {
    // 10,000 records (~2.3 MB) against an empty store with 64 KiB messages.
    let mut a = engine(1, pool().iter().cloned());
    let mut b = engine(2, []);
    let limit = 64 * 1024;
    for e in [&mut a, &mut b] {
        let mut cfg = e.config().clone();
        cfg.max_message_bytes = limit;
        *e = Engine::new(e.local_peer(), cfg, 7);
    }
    for r in pool() {
        a.handle(Input::Publish(r.clone()), NOW);
    }
    // Every message either side builds stays under the limit.
    let mut queue = a.handle(Input::SyncWith(b.local_peer()), NOW);
    let mut channel = 0;
    let mut rounds = 0;
    loop {
        while let Some(out) = queue.pop() {
            let Output::Send {
                to,
                exchange,
                request,
            } = out
            else {
                continue;
            };
            assert_eq!(to, b.local_peer());
            let bytes = wire::encode(&request);
            assert!(bytes.len() <= limit, "request of {} bytes", bytes.len());
            channel += 1;
            for resp in b.handle(
                Input::Request {
                    from: a.local_peer(),
                    channel,
                    request,
                },
                NOW,
            ) {
                if let Output::Respond { response, .. } = resp {
                    let bytes = wire::encode(&response);
                    assert!(bytes.len() <= limit, "response of {} bytes", bytes.len());
                    queue.extend(a.handle(Input::Response { exchange, response }, NOW));
                }
            }
        }
        rounds += 1;
        if ids(&a) == ids(&b) || rounds > 10 {
            break;
        }
        queue = a.handle(Input::SyncWith(b.local_peer()), NOW);
    }
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(b.store().len(), 10_000);
}

#[test]
fn the_answering_side_can_be_empty_or_hold_everything() {
    let mut a = engine(1, []);
    let mut b = engine(2, pool()[..3000].iter().cloned());
    reconcile(&mut a, &mut b);
    assert_eq!(a.store().len(), 3000);
    let mut c = engine(3, []);
    reconcile(&mut a, &mut c);
    assert_eq!(c.store().len(), 3000);
}

#[test]
fn garbage_negentropy_messages_are_refused_not_fatal() {
    let mut b = engine(2, pool()[..100].iter().cloned());
    let from = PeerId::random();
    for junk in [
        vec![],
        vec![0x61],
        vec![0x61, 0xff, 0xff, 0xff],
        vec![0x00; 64],
        vec![0x61; 5000],
    ] {
        let out = b.handle(
            Input::Request {
                from,
                channel: 1,
                request: Request::Reconcile(Some(junk.into()), vec![], vec![vec![1u8; 3].into()]),
            },
            NOW,
        );
        assert!(out.iter().any(|o| matches!(o, Output::Respond { .. })));
    }
    assert_eq!(b.store().len(), 100);
    // A response that does not belong to any exchange is ignored.
    let out = b.handle(
        Input::Response {
            exchange: 999,
            response: Response::InSync(NOW),
        },
        NOW,
    );
    assert!(out.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn two_random_stores_reconcile_to_their_union(
        size in 0usize..10_000, overlap in 0.0f64..=1.0, split in 0.0f64..=1.0, offset in 0usize..10_000,
    ) {
        // Records [offset, offset+size) mod 10,000: a fraction `overlap` shared, the rest split.
        let picked: Vec<&Record> = (0..size).map(|i| &pool()[(offset + i) % pool().len()]).collect();
        let shared = (picked.len() as f64 * overlap) as usize;
        let only = picked.len() - shared;
        let only_a = (only as f64 * split) as usize;
        let a_set = picked[..shared].iter().chain(&picked[shared..shared + only_a]).map(|r| (*r).clone());
        let b_set = picked[..shared].iter().chain(&picked[shared + only_a..]).map(|r| (*r).clone());
        let mut a = engine(1, a_set);
        let mut b = engine(2, b_set);
        let union: BTreeSet<RecordId> = ids(&a).union(&ids(&b)).copied().collect();
        reconcile(&mut a, &mut b);
        prop_assert_eq!(ids(&a), union.clone());
        prop_assert_eq!(ids(&b), union);
    }

    #[test]
    fn wire_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = wire::decode::<Request>(&bytes, wire::MAX_MESSAGE_BYTES);
        let _ = wire::decode::<Response>(&bytes, wire::MAX_MESSAGE_BYTES);
    }

    #[test]
    fn decoded_garbage_never_panics_the_engine(bytes in proptest::collection::vec(any::<u8>(), 0..512), seed in any::<u64>()) {
        let mut e = engine(seed % 7, pool()[..50].iter().cloned());
        if let Ok(request) = wire::decode::<Request>(&bytes, wire::MAX_MESSAGE_BYTES) {
            e.handle(Input::Request { from: PeerId::random(), channel: 1, request }, NOW);
        }
        if let Ok(response) = wire::decode::<Response>(&bytes, wire::MAX_MESSAGE_BYTES) {
            e.handle(Input::Response { exchange: 0, response }, NOW);
        }
        prop_assert_eq!(e.store().len(), 50);
    }
}

#[test]
fn messages_over_the_limit_or_with_another_version_are_refused() {
    let big = wire::encode(&Request::Push(vec![]));
    assert!(matches!(
        wire::decode::<Request>(&big, 2),
        Err(wire::DecodeError::TooLarge(..))
    ));
    let mut other = Vec::new();
    ciborium::into_writer(&(2u8, Request::Push(vec![])), &mut other).unwrap();
    assert_eq!(
        wire::decode::<Request>(&other, 1024),
        Err(wire::DecodeError::UnsupportedVersion(2))
    );
    let mut trailing = big.clone();
    trailing.push(0);
    assert_eq!(
        wire::decode::<Request>(&trailing, 1024),
        Err(wire::DecodeError::TrailingData)
    );
    // Deep nesting is cut by the recursion limit, not the stack.
    let mut deep = vec![0x82, 0x01];
    deep.extend(std::iter::repeat_n(0x81, 10_000));
    deep.push(0x00);
    assert!(wire::decode::<Request>(&deep, 1 << 20).is_err());
    // A declared length far beyond the bytes present is an error, not an allocation.
    let huge_len = [
        0x82, 0x01, 0xa1, 0x61, b'p', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(wire::decode::<Request>(&huge_len, 1024).is_err());
}

/// An engine that knows `peers` other peers (and holds nothing).
fn engine_with_peers(config: Config, peers: u64) -> Engine {
    let mut e = Engine::new(keypair(1).public().to_peer_id(), config, 3);
    for i in 0..peers {
        e.handle(
            Input::PeerDiscovered(keypair(100 + i).public().to_peer_id()),
            NOW,
        );
    }
    e
}

/// Reports the first `n` of the peers [`engine_with_peers`] made known as connected to `e`.
fn connect(e: &mut Engine, n: u64) -> Vec<PeerId> {
    let peers: Vec<PeerId> = (0..n)
        .map(|i| keypair(100 + i).public().to_peer_id())
        .collect();
    for peer in &peers {
        e.handle(Input::Connected(*peer), NOW);
    }
    peers
}

/// Pushes `records` from `from` to `e` (through the codec) and returns the engine's outputs.
fn push(e: &mut Engine, from: PeerId, records: &[Record]) -> Vec<Output> {
    deliver(
        e,
        from,
        &Request::Push(records.iter().map(Record::to_raw).collect()),
    )
}

#[test]
fn news_is_pushed_on_once_to_push_fanout_peers() {
    let config = Config {
        push_fanout: 2,
        ..Config::default()
    };
    let mut e = engine_with_peers(config, 10);
    let record = &pool()[0];
    let out = push(&mut e, PeerId::random(), std::slice::from_ref(record));
    assert_eq!(sends(&out).0, 2);
    // The same record again (from anyone) is not news: nothing is pushed.
    let out = push(&mut e, PeerId::random(), std::slice::from_ref(record));
    assert!(requests(&out).is_empty());
}

/// What [`Output::Merged`] reports in `out` (none when it is absent).
fn merged(out: &[Output]) -> Vec<RecordId> {
    let reports: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Merged(records) => Some(records.iter().map(|r| r.id()).collect::<Vec<_>>()),
            _ => None,
        })
        .collect();
    assert!(reports.len() <= 1, "one report per input at most: {out:?}");
    assert!(
        reports.is_empty() || matches!(out.last(), Some(Output::Merged(_))),
        "the report comes last"
    );
    reports.into_iter().flatten().collect()
}

/// Every record an input merges is reported once, its own records and refreshes included;
/// a record already held, an older version or a forged one is not.
#[test]
fn merged_records_are_reported_once_as_the_last_output() {
    let mut e = engine_with_peers(Config::default(), 10);
    let kp = keypair(78);
    let ttl = 60_000;
    let first = directory::sample::node(&kp, 1, NOW - 1000, ttl);
    let refresh = directory::sample::node(&kp, 2, NOW - 500, ttl);
    let out = push(
        &mut e,
        PeerId::random(),
        &[first.clone(), pool()[1].clone()],
    );
    assert_eq!(merged(&out), [first.id(), pool()[1].id()]);
    assert_eq!(
        merged(&push(
            &mut e,
            PeerId::random(),
            std::slice::from_ref(&first)
        )),
        []
    );
    assert_eq!(
        merged(&push(
            &mut e,
            PeerId::random(),
            std::slice::from_ref(&refresh)
        )),
        [refresh.id()]
    );
    assert_eq!(
        merged(&push(&mut e, PeerId::random(), &[first])),
        [],
        "older"
    );
    let mut forged = pool()[2].to_raw();
    forged.1 = serde_bytes::ByteBuf::from(vec![0u8; 64]);
    let out = deliver(&mut e, PeerId::random(), &Request::Push(vec![forged]));
    assert_eq!(merged(&out), []);
    let own = pool()[3].clone();
    assert_eq!(
        merged(&e.handle(Input::Publish(own.clone()), NOW)),
        [own.id()]
    );
}

/// Without `forward_refreshes`, a refresh (same content, newer seq and expiry) from a peer
/// is merged but not pushed on; a changed content or a withdrawal is news again.
#[test]
fn a_refresh_is_merged_but_not_pushed_on_when_refreshes_are_not_forwarded() {
    let config = Config {
        forward_refreshes: false,
        ..Config::default()
    };
    let mut e = engine_with_peers(config, 10);
    let kp = keypair(77);
    let ttl = 60_000;
    let version = |seq: u64, caps: &[&str]| specialist(&kp, "ocr", caps, seq, NOW - 1000, ttl);
    let first = version(1, &["ocr"]);
    let refresh = version(2, &["ocr"]);
    let out = push(&mut e, PeerId::random(), std::slice::from_ref(&first));
    assert_ne!(sends(&out), (0, 0), "a new key is news");
    let out = push(&mut e, PeerId::random(), std::slice::from_ref(&refresh));
    assert_eq!(sends(&out), (0, 0), "a refresh is not");
    assert_eq!(e.store().get(&refresh.key()).map(|r| r.seq()), Some(2));
    assert_eq!(e.stats().refreshes_not_forwarded, 1);
    let out = e.handle(Input::Tick, NOW);
    assert_eq!(sends(&out), (0, 0), "nor at the next round");
    let changed = version(3, &["ocr", "pdf"]);
    let mut body = changed.body().clone();
    body.seq = 4;
    body.withdrawn = true;
    let withdrawn = Record::sign(body, &kp, &Limits::default()).unwrap();
    for news in [changed, withdrawn] {
        let out = push(&mut e, PeerId::random(), std::slice::from_ref(&news));
        assert_ne!(sends(&out), (0, 0), "seq {} is news", news.seq());
    }
}

/// The prefixes a [`Request::Have`] of `out` announces, one set per announcement.
fn announced(out: &[Output]) -> Vec<BTreeSet<Vec<u8>>> {
    requests(out)
        .into_iter()
        .filter_map(|(_, r)| match r {
            Request::Have(ids) => Some(ids.into_iter().map(|id| id.into_vec()).collect()),
            _ => None,
        })
        .collect()
}

/// Refreshes and membership news (node records) merged from peers wait for the next round
/// and go on together, as ids only (most peers already hold most of a round's batch): one
/// round of announcements however many arrived; a record replaced in the meantime is not
/// announced; a specialist and a node's withdrawal do not wait.
#[test]
fn refreshes_and_new_members_go_on_together_as_ids_at_the_next_round() {
    let mut e = engine_with_peers(Config::default(), 20);
    let ttl = 60_000;
    let owners: Vec<_> = (80..83).map(keypair).collect();
    let firsts: Vec<Record> = owners
        .iter()
        .map(|kp| directory::sample::node(kp, 1, NOW - 1000, ttl))
        .collect();
    let out = push(&mut e, PeerId::random(), &firsts);
    assert_eq!(sends(&out), (0, 0), "new members wait for the round");
    assert_eq!(merged(&out).len(), 3, "but are merged at once");
    let refreshes: Vec<Record> = owners
        .iter()
        .map(|kp| directory::sample::node(kp, 2, NOW - 500, ttl))
        .collect();
    for refresh in &refreshes {
        let out = push(&mut e, PeerId::random(), std::slice::from_ref(refresh));
        assert_eq!(sends(&out), (0, 0), "a refresh waits for the round");
        assert_eq!(merged(&out), [refresh.id()], "but is merged at once");
    }
    // The first owner refreshes again before the round: only its latest version goes on.
    let again = directory::sample::node(&owners[0], 3, NOW - 400, ttl);
    push(&mut e, PeerId::random(), std::slice::from_ref(&again));
    let news = &pool()[0];
    assert_eq!(
        sends(&push(&mut e, PeerId::random(), std::slice::from_ref(news))),
        (1, e.announce_fanout()),
        "a specialist is news at once"
    );
    let out = e.handle(Input::Tick, NOW);
    let prefix = |r: &Record| r.id().0[..8].to_vec();
    let expected: BTreeSet<Vec<u8>> = [&again, &refreshes[1], &refreshes[2]]
        .into_iter()
        .map(prefix)
        .collect();
    let wanted = Config::default().push_fanout + e.announce_fanout();
    assert_eq!(announced(&out), vec![expected; wanted]);
    assert_eq!(sends(&out), (0, wanted), "ids only, no push");
    assert_eq!(e.stats().refreshes_not_forwarded, 0);
    let out = e.handle(Input::Tick, NOW + 1000);
    assert_eq!(sends(&out), (0, 0), "sent once");
    let mut body = again.body().clone();
    body.seq = 4;
    body.withdrawn = true;
    let left = Record::sign(body, &owners[0], &Limits::default()).unwrap();
    let out = push(&mut e, PeerId::random(), std::slice::from_ref(&left));
    assert_eq!(sends(&out).0, 1, "a node that left is news at once");
}

/// A record waiting for the next round's batch is held: announced by another peer before
/// this node announces it, it is not fetched again.
#[test]
fn a_record_waiting_for_the_round_is_not_fetched_again_when_announced() {
    let mut e = engine_with_peers(Config::default(), 20);
    let kp = keypair(80);
    for seq in [1, 2] {
        let version = specialist(&kp, "ocr", &["ocr"], seq, NOW - 1000, 60_000);
        push(&mut e, PeerId::random(), std::slice::from_ref(&version));
    }
    let refresh = specialist(&kp, "ocr", &["ocr"], 2, NOW - 1000, 60_000);
    let have = Request::Have(vec![refresh.id().0[..8].to_vec().into()]);
    let out = deliver(&mut e, PeerId::random(), &have);
    assert!(sent(&out).is_empty(), "{out:?}");
    assert!(out.contains(&Output::Respond {
        channel: 1,
        response: Response::PushAck(0)
    }));
}

/// Once the caller reports connections, ids of news go over them only (a dial for a few
/// bytes of announcement costs a handshake); pushes still go where they must.
#[test]
fn ids_of_news_go_over_open_connections_only() {
    let mut e = engine_with_peers(Config::default(), 50);
    let connected = connect(&mut e, 3);
    let out = push(&mut e, PeerId::random(), std::slice::from_ref(&pool()[0]));
    assert_eq!(
        sends(&out),
        (1, 2),
        "one push, the other two connected peers announced to"
    );
    assert!(requests(&out).iter().all(|(to, _)| connected.contains(to)));
    // A record of its own goes to every peer picked, connected or not.
    let own = directory::sample::node(&keypair(1), 1, NOW - 1000, 60_000);
    let out = e.handle(Input::Publish(own), NOW);
    assert_eq!(sends(&out), (1 + e.announce_fanout(), 0));
}

/// A new record of a node's own goes whole to every connected member (gossipsub's flood
/// publishing: one hop to most of the federation), its refreshes and node record to the usual
/// few; news that came from its owner goes on as ids only (the owner's connected peers hold it
/// already), news from anyone else as one push and ids.
#[test]
fn own_news_is_flooded_to_connected_members_and_news_from_its_owner_goes_on_as_ids() {
    let mut e = engine_with_peers(Config::default(), 50);
    let connected = connect(&mut e, 20);
    // 50 members: push_fanout + ⌈ln 50⌉ + 3 = 8 peers picked for news.
    let mine = specialist(&keypair(1), "mine", &["x"], 1, NOW - 1000, 60_000);
    let out = e.handle(Input::Publish(mine.clone()), NOW);
    assert_eq!(sends(&out), (20, 0), "every connected member, whole");
    assert!(requests(&out).iter().all(|(to, _)| connected.contains(to)));
    let refresh = specialist(&keypair(1), "mine", &["x"], 2, NOW - 500, 60_000);
    assert_eq!(sends(&e.handle(Input::Publish(refresh), NOW)), (8, 0));
    let node = directory::sample::node(&keypair(1), 1, NOW - 1000, 60_000);
    assert_eq!(sends(&e.handle(Input::Publish(node), NOW)), (8, 0));

    let owner = keypair(7);
    let theirs = specialist(&owner, "theirs", &["x"], 1, NOW - 1000, 60_000);
    let out = push(&mut e, owner.public().to_peer_id(), &[theirs]);
    assert_eq!(sends(&out), (0, 8), "from its owner: ids only");
    let other = specialist(&keypair(8), "other", &["x"], 1, NOW - 1000, 60_000);
    let out = push(&mut e, PeerId::random(), &[other]);
    assert_eq!(sends(&out), (1, 7), "relayed: one push, ids to the rest");
    // With fewer connected members than peers to pick, the rest are picked as before.
    let mut few = engine_with_peers(Config::default(), 50);
    few.handle(Input::Connected(connected[0]), NOW);
    assert_eq!(sends(&few.handle(Input::Publish(mine), NOW)), (8, 0));
}

/// News does not go back to where it came from: the peer that sent it and the peers that
/// announced it while this node fetched it hold it already.
#[test]
fn news_is_not_sent_back_to_the_peers_known_to_hold_it() {
    let mut e = engine_with_peers(Config::default(), 50);
    // 8 connected members: as many as push_fanout + ⌈ln 50⌉ + 3, so every one is picked for
    // news unless it is known to hold it.
    let connected = connect(&mut e, 8);
    let record = &pool()[0];
    let have = Request::Have(vec![record.id().0.to_vec().into()]);
    let out = deliver(&mut e, connected[0], &have);
    let (to, exchange, _) = sent(&out).pop().expect("a fetch from the first announcer");
    assert_eq!(to, connected[0]);
    let again = deliver(&mut e, connected[1], &have);
    assert_eq!(sends(&again), (0, 0), "already being fetched");
    let response = Response::Reconcile(None, vec![record.to_raw()], 1);
    let out = e.handle(Input::Response { exchange, response }, NOW);
    let to: Vec<PeerId> = requests(&out).iter().map(|(to, _)| *to).collect();
    assert_eq!(
        sends(&out),
        (1, 5),
        "one push, ids to the other 5 connected members"
    );
    assert!(!to.contains(&connected[0]) && !to.contains(&connected[1]));

    // Pushed: the pusher is left out too.
    let pushed = push(&mut e, connected[2], std::slice::from_ref(&pool()[1]));
    assert!(requests(&pushed).iter().all(|(to, _)| *to != connected[2]));
    assert_eq!(sends(&pushed), (1, 6));
}

/// The requests of `out` by kind: (pushes, id announcements).
fn sends(out: &[Output]) -> (usize, usize) {
    let all = requests(out);
    let count = |f: fn(&Request) -> bool| all.iter().filter(|(_, r)| f(r)).count();
    (
        count(|r| matches!(r, Request::Push(_))),
        count(|r| matches!(r, Request::Have(_))),
    )
}

/// Rumors have their own budget: reconciliations filling `max_exchanges` do not hold news
/// back, and news does not take reconciliations' slots; pushes that await feedback beyond
/// `max_rumor_exchanges` unanswered rumor exchanges wait for the rounds, while id
/// announcements and pushes without feedback, one way, take no slot.
#[test]
fn rumors_and_reconciliations_have_separate_budgets() {
    let config = Config {
        max_exchanges: 2,
        max_rumor_exchanges: 2,
        push_feedback_forwards: 1,
        ..Config::default()
    };
    let mut e = engine_with_peers(config.clone(), 50);
    let out = e.handle(Input::Tick, NOW);
    assert_eq!(sent(&out).len(), 2, "two reconciliations, every slot taken");
    let first = push(&mut e, PeerId::random(), &pool()[..1]);
    assert_eq!(sends(&first), (1, 7), "news goes out all the same");
    assert!(first.iter().any(|o| matches!(o, Output::Notify { .. })));
    let second = push(&mut e, PeerId::random(), &pool()[1..2]);
    assert_eq!(sends(&second), (1, 7), "announcements take no slot");
    let third = push(&mut e, PeerId::random(), &pool()[2..3]);
    assert_eq!(sends(&third), (0, 7), "two pushes in flight at most");
    assert_eq!(
        e.store().len(),
        3,
        "merged all the same: the rounds carry it"
    );
    // The next round still starts its reconciliations (the oldest unanswered give way).
    let out = e.handle(Input::Tick, NOW + 1);
    let syncs = sent(&out)
        .iter()
        .filter(|(_, _, r)| matches!(r, Request::Summary(..)))
        .count();
    assert_eq!(syncs, 2);

    // Without feedback a push goes one way: none is held back.
    let config = Config {
        push_feedback_forwards: 0,
        ..config
    };
    let mut e = engine_with_peers(config, 50);
    e.handle(Input::Tick, NOW);
    for record in &pool()[..3] {
        let out = push(&mut e, PeerId::random(), std::slice::from_ref(record));
        assert_eq!(sends(&out), (1, 7));
        assert!(sent(&out).is_empty(), "nothing awaits an answer");
    }
}

#[test]
fn news_is_pushed_to_one_peer_and_announced_to_ln_n_plus_three_and_own_news_to_all() {
    let mut e = engine_with_peers(Config::default(), 50);
    let out = push(&mut e, PeerId::random(), std::slice::from_ref(&pool()[0]));
    // 50 members: ⌈ln 50⌉ + 3 = 7 announcements besides the one eager push.
    assert_eq!(sends(&out), (1, 7));
    // A record of its own no one else can hold yet: the same 8 peers get it pushed.
    let own = directory::sample::node(&keypair(1), 1, NOW - 1000, 60_000);
    assert_eq!(sends(&e.handle(Input::Publish(own), NOW)), (8, 0));
    // An announcement of ids this node lacks starts one fetch of exactly those ids, from the
    // announcer; ids it holds or already fetches are not asked for again.
    let announcer = PeerId::random();
    let have =
        |ids: &[&Record]| Request::Have(ids.iter().map(|r| r.id().0.to_vec().into()).collect());
    let (held, new) = (&pool()[0], &pool()[1]);
    let out = e.handle(
        Input::Request {
            from: announcer,
            channel: 7,
            request: have(&[held, new]),
        },
        NOW,
    );
    let fetches: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                request: Request::Reconcile(None, records, wants),
                ..
            } => Some((*to, records.len(), wants.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        fetches,
        vec![(announcer, 0, vec![new.id().0.to_vec().into()])]
    );
    assert!(out.contains(&Output::Respond {
        channel: 7,
        response: Response::PushAck(1)
    }));
    let again = e.handle(
        Input::Request {
            from: PeerId::random(),
            channel: 8,
            request: have(&[new]),
        },
        NOW,
    );
    assert_eq!(sends(&again), (0, 0), "already being fetched");
}

#[test]
fn an_owner_emitting_faster_than_its_rumor_rate_is_not_amplified() {
    let config = Config {
        push_fanout: 1,
        rumor_burst_per_owner: 5.0,
        rumor_rate_per_owner: 1.0,
        ..Config::default()
    };
    let mut e = engine_with_peers(config, 1);
    let spammer = keypair(77);
    let records: Vec<Record> = (0..50)
        .map(|i| specialist(&spammer, &format!("s{i}"), &["x"], 1, NOW - 10, 60_000))
        .collect();
    let out = push(&mut e, PeerId::random(), &records);
    let pushed: usize = requests(&out)
        .iter()
        .map(|(_, r)| match r {
            Request::Push(r) => r.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(e.store().len(), 50, "every valid record is still merged");
    assert_eq!(pushed, 5, "only the burst is pushed on");
    assert_eq!(e.stats().rumors_suppressed, 45);
}

#[test]
fn records_beyond_the_per_peer_round_cap_are_left_for_later_not_lost() {
    let config = Config {
        push_fanout: 0,
        max_records_per_peer_per_round: 100,
        ..Config::default()
    };
    let mut e = Engine::new(keypair(1).public().to_peer_id(), config, 3);
    let from = PeerId::random();
    push(&mut e, from, &pool()[..250]);
    assert_eq!(e.store().len(), 100);
    assert_eq!(e.stats().records_deferred, 150);
    // Another peer still has its own allowance this round; the next round restores ours.
    push(&mut e, PeerId::random(), &pool()[100..150]);
    assert_eq!(e.store().len(), 150);
    e.handle(Input::Tick, NOW);
    push(&mut e, from, &pool()[150..250]);
    assert_eq!(e.store().len(), 250);
}

#[test]
fn a_push_acknowledged_as_news_goes_on_to_one_more_peer_within_its_budget() {
    let config = Config {
        push_fanout: 1,
        push_feedback_forwards: 1,
        ..Config::default()
    };
    let mut e = engine_with_peers(config, 10);
    let first = e.handle(Input::Publish(pool()[0].clone()), NOW);
    let Some(Output::Send { exchange, .. }) = first.first().cloned() else {
        panic!("no push: {first:?}");
    };
    let second = e.handle(
        Input::Response {
            exchange,
            response: Response::PushAck(1),
        },
        NOW,
    );
    // The budget of one forward is spent with this push: it awaits no feedback, so it goes
    // one way.
    let Some(Output::Notify {
        request: Request::Push(_),
        ..
    }) = second.first().cloned()
    else {
        panic!("news was not pushed on: {second:?}");
    };
}

#[test]
fn a_split_delta_sends_node_records_and_the_newest_records_first() {
    // 300 specialists of various ages and 5 node records against an empty peer, with
    // messages that hold only a few dozen records.
    let mut records: Vec<Record> = pool()[..300].to_vec();
    records.extend(
        (0..5).map(|i| directory::sample::node(&keypair(500 + i), 1, NOW - 5000, 3_600_000)),
    );
    let newest = specialist(&keypair(900), "newest", &["x"], 1, NOW - 1, 3_600_000);
    records.push(newest.clone());
    let config = Config {
        push_fanout: 0,
        max_message_bytes: 8 * 1024,
        ..Config::default()
    };
    let mut a = Engine::new(keypair(1).public().to_peer_id(), config.clone(), 1);
    let mut b = Engine::new(keypair(2).public().to_peer_id(), config, 2);
    for r in records {
        a.handle(Input::Publish(r), NOW);
    }
    // a starts the exchange, so a's records travel in its requests.
    let mut queue = a.handle(Input::SyncWith(b.local_peer()), NOW);
    let mut first_push: Option<Vec<directory::RawRecord>> = None;
    while let Some(out) = queue.pop() {
        let Output::Send {
            exchange, request, ..
        } = out
        else {
            continue;
        };
        if let Request::Reconcile(_, push, _) = &request
            && !push.is_empty()
            && first_push.is_none()
        {
            first_push = Some(push.clone());
        }
        for resp in b.handle(
            Input::Request {
                from: a.local_peer(),
                channel: 1,
                request,
            },
            NOW,
        ) {
            if let Output::Respond { response, .. } = resp {
                queue.extend(a.handle(Input::Response { exchange, response }, NOW));
            }
        }
    }
    let first: Vec<Record> = first_push
        .expect("records were pushed")
        .into_iter()
        .map(|raw| Record::from_raw(raw, &Limits::default()).unwrap())
        .collect();
    assert!(
        first.len() >= 6,
        "{} records in the first message",
        first.len()
    );
    assert!(
        first[..5].iter().all(|r| r.name().is_empty()),
        "node records first"
    );
    assert_eq!(first[5].id(), newest.id(), "then the newest record");
}

/// The requests `out` sends, with their destination and exchange id.
fn sent(out: &[Output]) -> Vec<(PeerId, u64, Request)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                exchange,
                request,
            } => Some((*to, *exchange, request.clone())),
            _ => None,
        })
        .collect()
}

/// The requests `out` sends, awaiting an answer or one way, with their destination.
fn requests(out: &[Output]) -> Vec<(PeerId, Request)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, request, .. } | Output::Notify { to, request } => {
                Some((*to, request.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The response `out` gives on `channel`.
fn answer(out: &[Output], channel: u64) -> Option<Response> {
    out.iter().find_map(|o| match o {
        Output::Respond {
            channel: c,
            response,
        } if *c == channel => Some(response.clone()),
        _ => None,
    })
}

/// Engine `key` (default settings) that knows `peers` other peers and holds nothing.
fn member(key: u64, peers: u64) -> Engine {
    let mut e = Engine::new(keypair(key).public().to_peer_id(), Config::default(), key);
    for i in 0..peers {
        e.handle(
            Input::PeerDiscovered(keypair(100 + i).public().to_peer_id()),
            NOW,
        );
    }
    e
}

/// `request` from `from` to `e` through the codec, on channel 1.
fn deliver(e: &mut Engine, from: PeerId, request: &Request) -> Vec<Output> {
    let bytes = wire::encode(request);
    let request = wire::decode(&bytes, wire::MAX_MESSAGE_BYTES).unwrap();
    e.handle(
        Input::Request {
            from,
            channel: 1,
            request,
        },
        NOW,
    )
}

#[test]
fn news_is_announced_by_an_eight_byte_prefix_and_fetched_by_it() {
    // The announcer merges a record as news and announces it to ⌈ln 50⌉ + 3 peers.
    let mut announcer = member(1, 50);
    let record = &pool()[3];
    let out = push(
        &mut announcer,
        PeerId::random(),
        std::slice::from_ref(record),
    );
    let haves: Vec<_> = requests(&out)
        .into_iter()
        .filter_map(|(_, r)| match r {
            Request::Have(ids) => Some(ids),
            _ => None,
        })
        .collect();
    assert_eq!(haves.len(), 7);
    let prefix = record.id().0[..wire::ID_PREFIX_LEN].to_vec();
    for ids in &haves {
        assert_eq!(ids, &vec![serde_bytes::ByteBuf::from(prefix.clone())]);
    }
    let have = Request::Have(haves[0].clone());
    assert_eq!(wire::encode(&have).len(), 15, "one announced id: 15 bytes");

    // A node that lacks it fetches it from the announcer by the prefix.
    let mut receiver = member(2, 5);
    let announcer_id = announcer.local_peer();
    let out = deliver(&mut receiver, announcer_id, &have);
    assert_eq!(answer(&out, 1), Some(Response::PushAck(1)));
    let fetches = sent(&out);
    assert_eq!(fetches.len(), 1, "{out:?}");
    let (to, exchange, fetch) = fetches[0].clone();
    assert_eq!(to, announcer_id);
    assert_eq!(
        fetch,
        Request::Reconcile(None, vec![], vec![prefix.clone().into()])
    );
    // The announcer finds the record by the prefix it announced.
    let out = deliver(&mut announcer, receiver.local_peer(), &fetch);
    let Some(response) = answer(&out, 1) else {
        panic!("no answer: {out:?}");
    };
    assert_eq!(
        response,
        Response::Reconcile(None, vec![record.to_raw()], 1)
    );
    let out = receiver.handle(Input::Response { exchange, response }, NOW);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Misbehaved { .. })),
        "{out:?}"
    );
    assert!(receiver.store().get_by_id(&record.id()).is_some());
    assert_eq!(receiver.stats().announced_fetched, 1);

    // Announced again (by anyone): the receiver had it as news, nothing is fetched.
    let out = deliver(&mut receiver, PeerId::random(), &have);
    assert_eq!(answer(&out, 1), Some(Response::PushAck(0)));
    assert!(
        sent(&out)
            .iter()
            .all(|(_, _, r)| !matches!(r, Request::Reconcile(..)))
    );
}

/// While a fetch of an announced id is under way, other announcements of it fetch nothing;
/// once it failed (or was refused), the next announcement fetches it again at once instead
/// of leaving it to a round's reconciliation.
#[test]
fn a_failed_fetch_of_announced_news_lets_the_next_announcer_be_asked() {
    let record = &pool()[4];
    let have = Request::Have(vec![serde_bytes::ByteBuf::from(
        record.id().0[..wire::ID_PREFIX_LEN].to_vec(),
    )]);
    let mut receiver = member(2, 5);
    let fetches = |out: &[Output]| -> Vec<u64> {
        sent(out)
            .into_iter()
            .filter(|(_, _, r)| matches!(r, Request::Reconcile(None, ..)))
            .map(|(_, exchange, _)| exchange)
            .collect()
    };
    let first = fetches(&deliver(&mut receiver, PeerId::random(), &have));
    assert_eq!(first.len(), 1);
    assert!(fetches(&deliver(&mut receiver, PeerId::random(), &have)).is_empty());
    receiver.handle(Input::Failed { exchange: first[0] }, NOW);
    let second = fetches(&deliver(&mut receiver, PeerId::random(), &have));
    assert_eq!(second.len(), 1, "asked again after the failure");
    let refused = Input::Response {
        exchange: second[0],
        response: Response::Refused("busy".to_owned()),
    };
    receiver.handle(refused, NOW);
    assert_eq!(
        fetches(&deliver(&mut receiver, PeerId::random(), &have)).len(),
        1,
        "and after a refusal"
    );
}

#[test]
fn a_prefix_that_matches_nothing_or_another_record_does_no_harm() {
    let mut announcer = member(1, 5);
    push(&mut announcer, PeerId::random(), &pool()[..20]);
    let mut receiver = member(2, 5);
    push(&mut receiver, PeerId::random(), &pool()[20..30]);
    let before = receiver.store().len();

    // A prefix the announcer never announced: the fetch comes back empty and ends.
    let unknown = Request::Have(vec![vec![0xab; wire::ID_PREFIX_LEN].into()]);
    let out = deliver(&mut receiver, announcer.local_peer(), &unknown);
    let [(_, exchange, fetch)] = sent(&out).try_into().unwrap();
    let in_flight = receiver.in_flight();
    let out = deliver(&mut announcer, receiver.local_peer(), &fetch);
    let response = answer(&out, 1).unwrap();
    assert_eq!(response, Response::Reconcile(None, vec![], 1));
    let out = receiver.handle(Input::Response { exchange, response }, NOW);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(receiver.store().len(), before);
    assert_eq!(receiver.in_flight(), in_flight - 1, "the fetch ended");

    // A prefix naming a record the receiver already had (as if another record shared it):
    // the receiver takes it for one it holds and fetches nothing; the announcement is missed
    // and reconciliation carries the record later, nothing wrong is merged.
    let held = Request::Have(vec![
        pool()[25].id().0[..wire::ID_PREFIX_LEN].to_vec().into(),
    ]);
    let out = deliver(&mut receiver, announcer.local_peer(), &held);
    assert_eq!(answer(&out, 1), Some(Response::PushAck(0)));
    assert!(sent(&out).is_empty());

    // A fetch by a prefix that now names a replaced record finds nothing.
    let replaced = &pool()[5];
    let newer = specialist(&keypair(5), "svc-5", &["translate"], 2, NOW - 10, 60_000);
    push(
        &mut announcer,
        PeerId::random(),
        std::slice::from_ref(&newer),
    );
    let stale = Request::Reconcile(
        None,
        vec![],
        vec![replaced.id().0[..wire::ID_PREFIX_LEN].to_vec().into()],
    );
    let out = deliver(&mut announcer, receiver.local_peer(), &stale);
    assert_eq!(answer(&out, 1), Some(Response::Reconcile(None, vec![], 1)));
}

#[test]
fn announced_or_wanted_ids_of_another_length_are_refused() {
    let mut e = engine_with_peers(Config::default(), 5);
    push(&mut e, PeerId::random(), &pool()[..5]);
    for len in [0, 5, 9, 31, 33] {
        let out = deliver(
            &mut e,
            PeerId::random(),
            &Request::Have(vec![vec![7; len].into()]),
        );
        let Some(Response::Refused(why)) = answer(&out, 1) else {
            panic!("{len}-byte announced id not refused: {out:?}");
        };
        assert!(why.contains(&format!("{len} bytes")), "{why}");
        assert!(sent(&out).is_empty());
        let wants = vec![pool()[0].id().0.to_vec().into(), vec![7; len].into()];
        let out = deliver(
            &mut e,
            PeerId::random(),
            &Request::Reconcile(None, vec![], wants),
        );
        let Some(Response::Refused(why)) = answer(&out, 1) else {
            panic!("{len}-byte wanted id not refused: {out:?}");
        };
        assert!(why.contains(&format!("{len} bytes")), "{why}");
    }
    // Whole 32-byte ids (older peers) are still answered.
    let whole = Request::Reconcile(None, vec![], vec![pool()[0].id().0.to_vec().into()]);
    let out = deliver(&mut e, PeerId::random(), &whole);
    assert_eq!(
        answer(&out, 1),
        Some(Response::Reconcile(None, vec![pool()[0].to_raw()], 1))
    );
}
