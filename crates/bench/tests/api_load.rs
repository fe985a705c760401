//! `gossipdir bench api` at a tiny scale: the whole harness (target node with its HTTP API, a
//! real peer, the feeder pushing signed records over the gossip protocol, churn, the open-loop
//! HTTP load), with assertions on what happened, not on how fast.

use std::time::Duration;

#[test]
fn a_small_load_is_answered_in_full_and_no_record_is_lost() {
    let args = gossipdir_bench::ApiArgs {
        records: 300,
        rate: 100.0,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        churn: 0.05,
        peers: 1,
        broad: 0.2,
        connections: 8,
        seed: 7,
        json: false,
    };
    let r = gossipdir_bench::api_load(&args).expect("the harness runs");
    let table = gossipdir_bench::api_load::to_table(&r);
    eprintln!("{table}");
    assert_eq!(r.scheduled, 100, "{table}");
    assert_eq!(r.answered, 100, "{table}");
    assert_eq!(r.errors, 0, "{table}");
    assert_eq!(r.wrong_answers, 0, "{table}");
    assert!(r.parsed >= 1, "{table}");
    assert_eq!(r.latency_ms.count, 100, "{table}");
    assert!(r.bytes_per_answer > 0.0, "{table}");
    // Both kinds of query were sent and answered with the right records.
    assert_eq!(
        r.by_kind.iter().map(|k| k.answered).sum::<u64>(),
        100,
        "{table}"
    );
    assert!(r.by_kind.iter().all(|k| k.answered > 0), "{table}");
    // 300 records of 6 owners arrived through the gossip protocol and none was lost; the
    // target also holds the two node records.
    assert_eq!(r.owners, 6);
    assert_eq!(r.target.specialists_start, 300, "{table}");
    assert_eq!(r.target.specialists_end, 300, "{table}");
    assert_eq!(r.target.records_end, 302, "{table}");
    assert_eq!(r.peers_specialists_end, vec![300], "{table}");
    // Churn re-signed records, and the target ended with the newest version of every one.
    assert!(r.churn_done.resigned > 0, "{table}");
    assert_eq!(r.churn_done.push_failures, 0, "{table}");
    assert_eq!(r.target.latest_held, 300, "{table}");
    assert_eq!(r.target.misbehaviour, 0, "{table}");
    assert!(r.problems().is_empty(), "{table}");
}
