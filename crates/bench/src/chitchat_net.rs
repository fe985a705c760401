//! N chitchat instances (Quickwit's scuttlebutt membership and key-value gossip, crates.io
//! `chitchat`) in one process, on chitchat's own UDP transport on 127.0.0.1.
//!
//! Each instance gets its own [`CountingTransport`]: chitchat's [`UdpTransport`] with every
//! datagram counted as chitchat reports it (`RecvOutcome::num_bytes_received`, the UDP payload:
//! header, digest and delta; UDP/IP headers excluded). Arrival of a key on a node is seen by a
//! key-change listener of that node (chitchat calls it when a delta sets the key), so it costs
//! no polling.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{
    ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ListenerHandle, ProtocolVersion, spawn_chitchat,
};

use crate::latency::bootstrap_choice;

/// Prefix of the benchmark's keys; the rest of a key is the trial number.
pub const KEY_PREFIX: &str = "bench-";
pub const CLUSTER: &str = "gossipdir-bench";

/// Datagram counters of one instance.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_in: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Chitchat's UDP transport, counting what goes through it.
pub struct CountingTransport {
    counters: Arc<Counters>,
}

#[async_trait]
impl Transport for CountingTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = UdpTransport.open(listen_addr).await?;
        Ok(Box::new(CountingSocket {
            inner,
            counters: self.counters.clone(),
        }))
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    counters: Arc<Counters>,
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let sent = self.inner.send(to, envelope).await?;
        self.counters
            .bytes_out
            .fetch_add(sent.num_bytes_sent as u64, Ordering::Relaxed);
        Ok(sent)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let got = self.inner.recv().await?;
        self.counters
            .bytes_in
            .fetch_add(got.num_bytes_received as u64, Ordering::Relaxed);
        self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        Ok(got)
    }
}

/// What the harness and the listeners share.
pub struct Arrivals {
    pub base: Instant,
    /// Trial whose key is being timed.
    pub trial: AtomicU64,
    /// Nanoseconds since `base` + 1 at which each node first held the trial's key (0: not yet).
    pub received_at: Vec<AtomicU64>,
}

/// The instances of one run.
pub struct CcNet {
    pub handles: Vec<ChitchatHandle>,
    pub ids: Vec<ChitchatId>,
    pub counters: Vec<Arc<Counters>>,
    pub arrivals: Arc<Arrivals>,
    _listeners: Vec<ListenerHandle>,
}

/// Bytes received by every node so far.
impl CcNet {
    pub fn bytes_in(&self) -> Vec<u64> {
        self.counters
            .iter()
            .map(|c| c.bytes_in.load(Ordering::Relaxed))
            .collect()
    }

    /// Sets `key = value` on node `origin` (a new version of its own state).
    pub async fn set(&self, origin: usize, key: String, value: String) {
        self.handles[origin]
            .with_chitchat(|c| c.self_node_state().set(key.clone(), value.clone()))
            .await;
    }

    /// (nodes known, nodes live) of every instance.
    pub async fn membership(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.handles.len());
        for h in &self.handles {
            out.push(
                h.with_chitchat(|c| (c.node_states().len(), c.live_nodes().count()))
                    .await,
            );
        }
        out
    }

    pub async fn shutdown(self) {
        for h in self.handles {
            let _ = h.shutdown().await;
        }
    }
}

/// A free UDP port on 127.0.0.1 (bound and released: another process could take it before
/// chitchat binds it; [`start`] retries then).
fn free_port() -> anyhow::Result<SocketAddr> {
    let s = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a UDP probe socket")?;
    s.local_addr().context("UDP probe socket address")
}

/// Starts `n` instances, instance i seeded with the same earlier nodes gossipdir node i is
/// bootstrapped to, gossiping every `interval`; waits until every instance knows all `n` and
/// holds them all live.
pub async fn start(
    n: usize,
    degree: usize,
    seed: u64,
    interval: Duration,
    deadline: Duration,
) -> anyhow::Result<CcNet> {
    let started = Instant::now();
    let arrivals = Arc::new(Arrivals {
        base: Instant::now(),
        trial: AtomicU64::new(u64::MAX),
        received_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut handles: Vec<ChitchatHandle> = Vec::with_capacity(n);
    let mut ids: Vec<ChitchatId> = Vec::with_capacity(n);
    let mut counters = Vec::with_capacity(n);
    let mut listeners = Vec::with_capacity(n);
    for i in 0..n {
        let seeds: Vec<String> = bootstrap_choice(seed, i, degree)
            .into_iter()
            .map(|j| ids[j].gossip_advertise_addr.to_string())
            .collect();
        let c = Arc::new(Counters::default());
        let transport = CountingTransport {
            counters: c.clone(),
        };
        let mut attempt = 0;
        let (handle, id) = loop {
            attempt += 1;
            let addr = free_port()?;
            let id = ChitchatId::new(format!("node-{i}"), 0, addr);
            let config = ChitchatConfig {
                chitchat_id: id.clone(),
                cluster_id: CLUSTER.to_owned(),
                gossip_interval: interval,
                listen_addr: addr,
                seed_nodes: seeds.clone(),
                failure_detector_config: FailureDetectorConfig::default(),
                marked_for_deletion_grace_period: Duration::from_secs(3600),
                catchup_callback: None,
                extra_liveness_predicate: None,
                protocol_version: ProtocolVersion::V1,
            };
            match spawn_chitchat(config, Vec::new(), &transport).await {
                Ok(h) => break (h, id),
                Err(e) if attempt < 5 => {
                    tracing::warn!(node = i, error = %e, "chitchat: could not start, retrying on another port");
                }
                Err(e) => return Err(e.context(format!("starting chitchat node {i}"))),
            }
        };
        let shared = arrivals.clone();
        let listener = handle
            .with_chitchat(|chitchat| {
                let shared = shared.clone();
                chitchat.subscribe_event(KEY_PREFIX, move |event| {
                    let Ok(t) = event.key.parse::<u64>() else {
                        return;
                    };
                    if t == shared.trial.load(Ordering::SeqCst) {
                        let at = shared.base.elapsed().as_nanos() as u64 + 1;
                        let _ = shared.received_at[i].compare_exchange(
                            0,
                            at,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                    }
                })
            })
            .await;
        listeners.push(listener);
        handles.push(handle);
        ids.push(id);
        counters.push(c);
    }
    let net = CcNet {
        handles,
        ids,
        counters,
        arrivals,
        _listeners: listeners,
    };
    tracing::info!(
        n,
        secs = started.elapsed().as_secs_f64(),
        "chitchat: instances spawned; waiting for every instance to hold every node live"
    );
    let mut last_report = Instant::now();
    loop {
        let m = net.membership().await;
        let complete = m.iter().filter(|(k, l)| *k >= n && *l >= n).count();
        if complete == n {
            break;
        }
        if started.elapsed() > deadline {
            let least = m.iter().map(|(_, l)| *l).min().unwrap_or(0);
            net.shutdown().await;
            bail!(
                "chitchat membership did not form within {deadline:?}: {complete} of {n} instances hold all {n} live (the poorest: {least})"
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            tracing::info!(
                complete,
                n,
                secs = started.elapsed().as_secs_f64(),
                "chitchat: membership forming"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        n,
        secs = started.elapsed().as_secs_f64(),
        "chitchat: membership complete"
    );
    Ok(net)
}
