//! N libp2p gossipsub swarms on 127.0.0.1 (TCP + noise + yamux, default gossipsub config:
//! mesh D = 6, D_low = 5, D_high = 12, heartbeat 1 s, signed messages), one topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, noise, tcp, yamux};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::latency::{Bytes, bootstrap_choice, progress};

pub const TOPIC: &str = "gossipdir-bench";

/// State shared between the swarms' tasks and the harness.
pub struct Shared {
    pub base: Instant,
    /// Trial whose message is being timed (messages start with it, 8 bytes big-endian).
    pub trial: AtomicU64,
    /// Nanoseconds since `base` + 1 at which each node got the current trial's message (0: not).
    pub received_at: Vec<AtomicU64>,
    /// Messages received by each node, all trials.
    pub messages: Vec<AtomicU64>,
}

enum Cmd {
    Publish(Vec<u8>, oneshot::Sender<Result<(), String>>),
    /// (mesh peers on the topic, connected gossipsub peers)
    Mesh(oneshot::Sender<(usize, usize)>),
    Dial(Multiaddr),
}

pub struct PsNode {
    cmd: mpsc::Sender<Cmd>,
    pub registry: Registry,
    pub addr: Multiaddr,
    task: tokio::task::JoinHandle<()>,
}

impl PsNode {
    pub async fn publish(&self, data: Vec<u8>) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Publish(data, tx))
            .await
            .map_err(|_| anyhow!("gossipsub node stopped"))?;
        rx.await?
            .map_err(|e| anyhow!("gossipsub publish failed: {e}"))
    }

    pub async fn mesh(&self) -> anyhow::Result<(usize, usize)> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Mesh(tx))
            .await
            .map_err(|_| anyhow!("gossipsub node stopped"))?;
        Ok(rx.await?)
    }

    pub async fn dial(&self, addr: Multiaddr) -> anyhow::Result<()> {
        self.cmd
            .send(Cmd::Dial(addr))
            .await
            .map_err(|_| anyhow!("gossipsub node stopped"))
    }

    pub fn bytes(&self) -> Bytes {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        Bytes::from_metrics(&text)
    }

    pub fn abort(&self) {
        self.task.abort();
    }
}

pub struct PsNet {
    pub nodes: Vec<PsNode>,
    pub shared: Arc<Shared>,
}

/// Room for `late` extra nodes is kept in `shared`.
pub async fn spawn_node(i: usize, shared: Arc<Shared>) -> anyhow::Result<PsNode> {
    let mut registry = Registry::default();
    let config = gossipsub::ConfigBuilder::default()
        .build()
        .map_err(|e| anyhow!("gossipsub config: {e}"))?;
    let key = libp2p::identity::Keypair::generate_ed25519();
    let behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
        .map_err(|e| anyhow!("gossipsub: {e}"))?;
    let mut swarm: Swarm<gossipsub::Behaviour> = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_bandwidth_metrics(&mut registry)
        .with_behaviour(|_| behaviour)
        .map_err(|e| anyhow!("gossipsub behaviour: {e:?}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = IdentTopic::new(TOPIC);
    swarm
        .behaviour_mut()
        .subscribe(&topic)
        .map_err(|e| anyhow!("subscribe: {e:?}"))?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let local = *swarm.local_peer_id();
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .context("a gossipsub node did not listen within 10 s")?
    .with(Protocol::P2p(local));
    let (tx, mut rx) = mpsc::channel::<Cmd>(64);
    let task = tokio::spawn(async move {
        let hash = topic.hash();
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = event {
                        shared.messages[i].fetch_add(1, Ordering::Relaxed);
                        if message.data.len() >= 8 {
                            let t = u64::from_be_bytes(message.data[..8].try_into().expect("8 bytes"));
                            if t == shared.trial.load(Ordering::SeqCst) {
                                let at = shared.base.elapsed().as_nanos() as u64 + 1;
                                let _ = shared.received_at[i].compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst);
                            }
                        }
                    }
                }
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Cmd::Publish(data, reply)) => {
                        let r = swarm.behaviour_mut().publish(topic.clone(), data).map(|_| ()).map_err(|e| e.to_string());
                        let _ = reply.send(r);
                    }
                    Some(Cmd::Mesh(reply)) => {
                        let mesh = swarm.behaviour().mesh_peers(&hash).count();
                        let all = swarm.behaviour().all_peers().filter(|(_, t)| t.contains(&&hash)).count();
                        let _ = reply.send((mesh, all));
                    }
                    Some(Cmd::Dial(a)) => { let _ = swarm.dial(a); }
                }
            }
        }
    });
    Ok(PsNode {
        cmd: tx,
        registry,
        addr,
        task,
    })
}

/// Starts `n` swarms (plus room for `extra` late ones), node i dialling the same earlier
/// nodes as gossipdir node i is bootstrapped to; waits until every mesh has at least
/// min(D_low = 5, n - 1) peers, then two more heartbeats.
pub async fn start(
    n: usize,
    extra: usize,
    degree: usize,
    seed: u64,
    deadline: Duration,
) -> anyhow::Result<PsNet> {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        trial: AtomicU64::new(0),
        received_at: (0..n + extra).map(|_| AtomicU64::new(0)).collect(),
        messages: (0..n + extra).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut nodes: Vec<PsNode> = Vec::with_capacity(n);
    for i in 0..n {
        let node = spawn_node(i, shared.clone())
            .await
            .with_context(|| format!("starting gossipsub node {i}"))?;
        for j in bootstrap_choice(seed, i, degree) {
            node.dial(nodes[j].addr.clone()).await?;
        }
        nodes.push(node);
    }
    progress(format_args!(
        "gossipsub: {n} swarms spawned in {:.1?}; waiting for the meshes",
        start.elapsed()
    ));
    let want = 5.min(n - 1);
    let mut last_report = Instant::now();
    loop {
        let mut least = usize::MAX;
        let mut ready = 0;
        for node in &nodes {
            let (mesh, _) = node.mesh().await?;
            least = least.min(mesh);
            if mesh >= want {
                ready += 1;
            }
        }
        if ready == n {
            break;
        }
        if start.elapsed() > deadline {
            bail!(
                "gossipsub meshes did not form within {deadline:?}: {ready} of {n} nodes have {want}+ mesh peers (smallest mesh: {least})"
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            progress(format_args!(
                "gossipsub: {ready} of {n} meshes ready (smallest: {least})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    progress(format_args!(
        "gossipsub: meshes ready in {:.1?}",
        start.elapsed()
    ));
    Ok(PsNet { nodes, shared })
}
