//! Several real nodes (TCP on 127.0.0.1, real protocol) in one process.

use std::future::Future;
use std::time::{Duration, Instant};

use directory::{Keypair, Multiaddr};
use gossipdir_node::{Announce, Change, ChangeKind, Node, NodeConfig, RecordView};
use tokio::sync::broadcast;

const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_secs(3);

fn config(bootstrap: Vec<Multiaddr>) -> NodeConfig {
    let mut c = NodeConfig::new(Keypair::generate_ed25519());
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.bootstrap = bootstrap;
    c.api = None;
    c.mdns = false;
    c.interval = INTERVAL;
    c.ttl = TTL;
    c.request_timeout = Duration::from_secs(2);
    c
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `node`'s first listen address with its peer id: what others bootstrap to.
async fn bootstrap_addr(node: &Node) -> Multiaddr {
    let addr: Multiaddr = eventually("a listen address", Duration::from_secs(5), || {
        let c = node.client.clone();
        async move { c.status().await.ok()?.listen_addrs.first()?.parse().ok() }
    })
    .await;
    addr.with(libp2p::multiaddr::Protocol::P2p(node.peer_id))
}

/// Node 0, then `n - 1` nodes bootstrapping to it.
async fn network(n: usize) -> Vec<Node> {
    network_of(n, config, Duration::from_secs(10)).await
}

/// [`network`] with nodes configured by `make` (given their bootstrap addresses), waiting up
/// to `join` for every node to hold every node record.
async fn network_of(
    n: usize,
    make: impl Fn(Vec<Multiaddr>) -> NodeConfig,
    join: Duration,
) -> Vec<Node> {
    let first = Node::spawn(make(Vec::new())).await.unwrap();
    let boot = bootstrap_addr(&first).await;
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(Node::spawn(make(vec![boot.clone()])).await.unwrap());
    }
    // Everyone knows everyone's node record.
    for node in &nodes {
        eventually("all node records", join, || {
            let c = node.client.clone();
            async move { (c.status().await.ok()?.nodes == n).then_some(()) }
        })
        .await;
    }
    nodes
}

async fn find(node: &Node, capability: &str) -> Vec<RecordView> {
    node.client
        .query(vec![capability.to_owned()])
        .await
        .unwrap()
}

fn announce(name: &str, capability: &str) -> Announce {
    Announce {
        name: name.to_owned(),
        capabilities: vec![capability.to_owned(), "common".to_owned()],
        endpoint: Some("https://example.test/x".to_owned()),
        ..Default::default()
    }
}

/// The next change of `kind` on `feed` (others are skipped), or a panic after 10 s.
async fn next_change(feed: &mut broadcast::Receiver<Change>, kind: ChangeKind) -> Change {
    let wait = async {
        loop {
            let change = feed.recv().await.expect("the feed is open and keeps up");
            if change.kind == kind {
                return change;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} change within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_propagates_and_withdrawal_follows() {
    let nodes = network(4).await;
    let mut feed = nodes[1].client.watch().unwrap();
    let made = nodes[3]
        .client
        .announce(announce("translator", "translate"))
        .await
        .unwrap();
    assert_eq!(made.owner, nodes[3].peer_id.to_string());
    for node in &nodes {
        let found = eventually(
            "the specialist everywhere",
            Duration::from_secs(10),
            || async {
                let r = find(node, "translate").await;
                (!r.is_empty()).then_some(r)
            },
        )
        .await;
        assert_eq!(found[0].name, "translator");
        assert_eq!(found[0].endpoint.as_deref(), Some("https://example.test/x"));
    }
    // Both capabilities must match.
    assert!(find(&nodes[1], "nothing").await.is_empty());
    let both = nodes[1]
        .client
        .query(vec!["translate".into(), "common".into()])
        .await
        .unwrap();
    assert_eq!(both.len(), 1);
    // The watcher of node 1 was told, with the record as queries show it.
    let change = next_change(&mut feed, ChangeKind::Specialist).await;
    assert_eq!(change.record, both[0]);

    assert!(nodes[3].client.withdraw("translator").await.unwrap());
    assert!(!nodes[3].client.withdraw("translator").await.unwrap());
    for node in &nodes {
        eventually(
            "the withdrawal everywhere",
            Duration::from_secs(10),
            || async { find(node, "translate").await.is_empty().then_some(()) },
        )
        .await;
    }
    let change = next_change(&mut feed, ChangeKind::Withdrawn).await;
    assert_eq!(
        (change.record.name.as_str(), change.record.owner.as_str()),
        ("translator", made.owner.as_str())
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_vanished_owner_expire_and_graceful_stop_withdraws() {
    let mut nodes = network(4).await;
    nodes[3]
        .client
        .announce(announce("crasher", "crash"))
        .await
        .unwrap();
    nodes[2]
        .client
        .announce(announce("leaver", "leave"))
        .await
        .unwrap();
    for node in &nodes[..2] {
        for cap in ["crash", "leave"] {
            eventually("both specialists", Duration::from_secs(10), || async {
                (!find(node, cap).await.is_empty()).then_some(())
            })
            .await;
        }
    }
    // Node 3 stops refreshing (crash: no withdrawal); within the TTL and a few rounds its
    // specialist and its node record are gone everywhere.
    let crashed = nodes.pop().unwrap();
    let crashed_at = Instant::now();
    crashed.abort();
    for node in &nodes {
        eventually("expiry", TTL + Duration::from_secs(3), || async {
            find(node, "crash").await.is_empty().then_some(())
        })
        .await;
    }
    for node in &nodes {
        eventually("node record expiry", TTL + Duration::from_secs(3), || {
            let c = node.client.clone();
            async move { (c.status().await.ok()?.nodes == 3).then_some(()) }
        })
        .await;
    }
    eprintln!("expired everywhere after {:?}", crashed_at.elapsed());

    // Node 2 stops gracefully: its withdrawal beats the TTL by far.
    let leaver = nodes.pop().unwrap();
    let left_at = Instant::now();
    leaver.shutdown().await;
    for node in &nodes {
        eventually("withdrawal on shutdown", Duration::from_secs(2), || async {
            find(node, "leave").await.is_empty().then_some(())
        })
        .await;
    }
    let took = left_at.elapsed();
    eprintln!("withdrawn everywhere {took:?} after shutdown began");
    assert!(
        took < TTL,
        "withdrawal took {took:?}, not faster than expiry"
    );
    for node in &nodes {
        let status = node.client.status().await.unwrap();
        assert_eq!(status.nodes, 2, "{status:?}");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_does_not_keep_its_earlier_runs_specialists_listed() {
    let nodes = network(1).await;
    let boot = bootstrap_addr(&nodes[0]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(vec![boot]);
    c.data_dir = Some(dir.path().to_owned());
    let first = Node::spawn(c.clone()).await.unwrap();
    let made = first
        .client
        .announce(announce("old", "from-the-first-run"))
        .await
        .unwrap();
    // Kept alive by the node record: its own lifetime is the 10-minute default.
    assert!(made.expires_at - made.issued_at >= 600_000);
    eventually(
        "the specialist on node 0",
        Duration::from_secs(10),
        || async { (!find(&nodes[0], "from-the-first-run").await.is_empty()).then_some(()) },
    )
    .await;
    // The issuer state is saved at the next round.
    let state = dir.path().join("issued.json");
    eventually(
        "the specialist in the saved state",
        Duration::from_secs(5),
        || async {
            let text = std::fs::read_to_string(&state).ok()?;
            text.contains("\"old\"").then_some(())
        },
    )
    .await;
    // Crash (no withdrawal), then restart with the same key and state, announcing nothing:
    // the restarted node's fresh node record must not keep the old specialist listed.
    first.abort();
    let second = Node::spawn(c).await.unwrap();
    eventually("the earlier run's specialist unlisted", TTL, || async {
        find(&nodes[0], "from-the-first-run")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(nodes[0].client.status().await.unwrap().nodes, 2);
    second.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_announcements_are_refused_and_nothing_is_stored() {
    let nodes = network(1).await;
    let client = &nodes[0].client;
    let bad = Announce {
        name: "x".repeat(200),
        capabilities: vec!["c".into()],
        ..Default::default()
    };
    let err = client.announce(bad).await.unwrap_err();
    assert!(
        matches!(
            err,
            gossipdir_node::NodeError::Invalid { field: "name", .. }
        ),
        "{err:?}"
    );
    let bad = Announce {
        name: "ok".into(),
        capabilities: vec!["".into()],
        ..Default::default()
    };
    let err = client.announce(bad).await.unwrap_err();
    assert!(
        matches!(
            err,
            gossipdir_node::NodeError::Invalid {
                field: "capabilities",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(client.query(Vec::new()).await.unwrap().is_empty());
    let metrics = client.metrics().await.unwrap();
    assert!(
        metrics.contains("gossipdir_rejected_records_total"),
        "{metrics}"
    );
    assert!(metrics.contains("gossipdir_rounds_total"));
    for node in nodes {
        node.shutdown().await;
    }
}

/// With a partial view of 2, sixteen nodes that all bootstrap to node 0 (and run no
/// Kademlia) still learn every member from the directory, spread a specialist to everyone, and
/// keep a bounded number of connections: their view's, the views they are in, a rotation link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_partial_view_news_spreads_over_bounded_connections() {
    const N: usize = 16;
    let view = |bootstrap: Vec<Multiaddr>| {
        let mut c = config(bootstrap);
        c.view_size = 2;
        // Links the view does not use (the bootstrap link, a rotation's) close soon after.
        c.idle_timeout = Duration::from_secs(1);
        c
    };
    let nodes = network_of(N, view, Duration::from_secs(20)).await;
    nodes[N - 1]
        .client
        .announce(announce("summarizer", "summarize"))
        .await
        .unwrap();
    for node in &nodes {
        eventually(
            "the specialist everywhere",
            Duration::from_secs(10),
            || async { (!find(node, "summarize").await.is_empty()).then_some(()) },
        )
        .await;
    }
    // Out-links 2, in-links 2 on average, plus a rotation link now and then; against N - 1 = 15
    // for a full mesh. Measured after the bootstrap links have had time to go idle.
    eventually(
        "at most 7 connections per node",
        Duration::from_secs(20),
        || async {
            let mut total = 0;
            for node in &nodes {
                total += node.client.status().await.ok()?.connections.direct;
            }
            let average = total as f64 / N as f64;
            (average <= 7.0).then_some(())
        },
    )
    .await;
    for node in nodes {
        node.shutdown().await;
    }
}
