//! N real gossipdir nodes on 127.0.0.1.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use directory::Multiaddr;
use futures::{Stream, StreamExt};
use node::libp2p::multiaddr::Protocol;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::latency::{Bytes, bootstrap_choice, progress};

/// The nodes and their dialable addresses (ending in `/p2p/<id>`).
pub struct DirNet {
    pub nodes: Vec<node::Node>,
    pub addrs: Vec<Multiaddr>,
}

/// Settings of every node of the benchmark.
pub fn config(seed: u64, i: usize, bootstrap: Vec<Multiaddr>) -> node::NodeConfig {
    let mut c = node::NodeConfig::new(directory::Keypair::generate_ed25519());
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    c.bootstrap = bootstrap;
    c.api = None;
    c.mdns = false;
    c.seed = Some(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
    c
}

/// Spawns one node and waits for its TCP listen address.
pub async fn spawn(config: node::NodeConfig) -> anyhow::Result<(node::Node, Multiaddr)> {
    let n = node::Node::spawn(config).await?;
    let start = Instant::now();
    loop {
        let status = n
            .client
            .status()
            .await
            .context("node stopped while starting")?;
        if let Some(a) = status
            .listen_addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .find(|a| {
                a.iter()
                    .any(|p| matches!(p, Protocol::Tcp(_) | Protocol::QuicV1))
            })
        {
            let addr = a.with(Protocol::P2p(n.peer_id));
            return Ok((n, addr));
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("a node did not listen within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts `n` nodes, node i bootstrapped to `degree` random earlier nodes, and waits until
/// every node holds every node record.
pub async fn start(
    n: usize,
    degree: usize,
    seed: u64,
    deadline: Duration,
) -> anyhow::Result<DirNet> {
    start_with_interval(n, degree, seed, deadline, node::config::DEFAULT_INTERVAL).await
}

/// [`start`] with gossip rounds every `interval` on every node.
pub async fn start_with_interval(
    n: usize,
    degree: usize,
    seed: u64,
    deadline: Duration,
    interval: Duration,
) -> anyhow::Result<DirNet> {
    let start = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    let mut addrs: Vec<Multiaddr> = Vec::with_capacity(n);
    for i in 0..n {
        let boot = bootstrap_choice(seed, i, degree)
            .into_iter()
            .map(|j| addrs[j].clone())
            .collect();
        let mut c = config(seed, i, boot);
        c.interval = interval;
        let (node, addr) = spawn(c)
            .await
            .with_context(|| format!("starting gossipdir node {i}"))?;
        nodes.push(node);
        addrs.push(addr);
        if i > 0 && i % 100 == 0 {
            progress(format_args!(
                "gossipdir: {i} of {n} nodes spawned in {:.1?}",
                start.elapsed()
            ));
        }
    }
    progress(format_args!(
        "gossipdir: {n} nodes spawned in {:.1?}; waiting for every node record on every node",
        start.elapsed()
    ));
    wait_joined(
        &nodes,
        deadline.saturating_sub(start.elapsed()),
        |how_far| {
            progress(format_args!(
                "gossipdir: {how_far}, {:.0?}",
                start.elapsed()
            ))
        },
    )
    .await?;
    progress(format_args!(
        "gossipdir: membership complete in {:.1?}",
        start.elapsed()
    ));
    Ok(DirNet { nodes, addrs })
}

/// Every node's status, asked of all of them at once: under load one status takes as long
/// as a pass of the scheduler over every node's tasks, so a sweep one node after the other
/// takes that times N.
pub async fn statuses(nodes: &[node::Node]) -> anyhow::Result<Vec<node::Status>> {
    futures::future::join_all(nodes.iter().map(|x| x.client.status()))
        .await
        .into_iter()
        .map(|s| s.context("a node stopped"))
        .collect()
}

/// Waits until every node holds every node record (one per node), asking them all every
/// 50 ms; tells `report` how far the membership got every 5 s, and fails with the same
/// after `deadline`.
pub async fn wait_joined(
    nodes: &[node::Node],
    deadline: Duration,
    report: impl Fn(&str),
) -> anyhow::Result<()> {
    let n = nodes.len();
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let statuses = statuses(nodes).await?;
        let complete = statuses.iter().filter(|s| s.nodes >= n).count();
        if complete == n {
            return Ok(());
        }
        let least = statuses.iter().map(|s| s.nodes).min().unwrap_or(0);
        let how_far = format!(
            "{complete} of {n} nodes hold all {n} node records (the poorest holds {least})"
        );
        if start.elapsed() > deadline {
            bail!("the membership did not form within {deadline:?}: {how_far}");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            report(&how_far);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Byte counters of every node (codec payload, libp2p bandwidth, exchange counts).
pub async fn snapshot(nodes: &[node::Node]) -> anyhow::Result<Vec<Bytes>> {
    let texts = futures::future::join_all(nodes.iter().map(|x| x.client.metrics())).await;
    texts
        .into_iter()
        .map(|t| Ok(Bytes::from_metrics(&t.context("a node stopped")?)))
        .collect()
}

/// The index of each node as it first merges a specialist with `capability`, from the nodes'
/// change feeds ([`node::Client::watch`]), taken when this is called: call it before the
/// record is announced. Nothing is polled, so watching adds no load; a node whose feed fell
/// behind is asked once. Ends when every node has held it.
pub fn arrivals<'a>(
    nodes: &'a [node::Node],
    capability: &'a str,
) -> impl Stream<Item = anyhow::Result<usize>> + Unpin + 'a {
    futures::stream::select_all(nodes.iter().enumerate().map(|(i, node)| {
        let feed = node.client.watch();
        futures::stream::once(async move { first_held(node, feed, capability).await.map(|()| i) })
            .boxed()
    }))
}

async fn first_held(
    node: &node::Node,
    feed: Result<broadcast::Receiver<node::Change>, node::NodeError>,
    capability: &str,
) -> anyhow::Result<()> {
    let mut feed = feed.context("watching a node")?;
    loop {
        match feed.recv().await {
            Ok(change) => {
                if change.kind == node::ChangeKind::Specialist
                    && change.record.capabilities.iter().any(|c| c == capability)
                {
                    return Ok(());
                }
            }
            Err(RecvError::Lagged(_)) => {
                let held = node.client.query(vec![capability.to_owned()]).await;
                if !held.context("a node stopped")?.is_empty() {
                    return Ok(());
                }
            }
            Err(RecvError::Closed) => bail!("a node stopped"),
        }
    }
}

/// Times since `start` at which each of `n` nodes held the record, from [`arrivals`] (none:
/// not by `start + deadline`).
pub async fn arrival_times(
    mut arrivals: impl Stream<Item = anyhow::Result<usize>> + Unpin,
    n: usize,
    start: Instant,
    deadline: Duration,
) -> anyhow::Result<Vec<Option<Duration>>> {
    let mut held = vec![None; n];
    let until = tokio::time::Instant::from_std(start + deadline);
    while let Ok(Some(arrival)) = tokio::time::timeout_at(until, arrivals.next()).await {
        held[arrival?] = Some(start.elapsed());
    }
    Ok(held)
}
