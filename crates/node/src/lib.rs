//! A gossipdir node: the only crate touching libp2p.
//!
//! - [`behaviour`]: the combined libp2p behaviour (request-response sync with our own
//!   [`codec`], mDNS, Kademlia, identify, ping, AutoNAT, relay client and server, DCUtR,
//!   connection limits) and the swarm (TCP+noise+yamux, QUIC, DNS, relay transport).
//! - [`link`]: the same sync requests pipelined over one long-lived stream per connected
//!   peer (no substream per request).
//! - [`liveness`]: ping on TCP and relayed connections (QUIC notices a dead peer itself).
//! - [`event_loop`]: owns the swarm and the gossip engine; publishes and refreshes this
//!   node's records; withdraws them on shutdown.
//! - [`client`]: the cloneable handle the API and the CLI drive the node with.
//! - [`api`]: the local HTTP API.
//! - [`metrics`]: Prometheus metrics.
//!
//! Records are issued with a TTL (default [`config::DEFAULT_TTL`], 60 s) and refreshed at a
//! third of it, so a node that vanishes is gone from every directory within one TTL.

pub mod api;
pub mod behaviour;
pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod event_loop;
pub mod link;
pub mod liveness;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use directory::{Issuer, Limits};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use client::{
    Announce, Change, ChangeKind, Client, Connections, GossipBytes, NodeError, PeerView,
    RecordView, Status,
};
pub use config::NodeConfig;
pub use error::StartError;
pub use libp2p;

/// A running node.
pub struct Node {
    pub client: Client,
    /// The API's bound address, when it has one.
    pub api_addr: Option<SocketAddr>,
    pub peer_id: directory::PeerId,
    /// Finishes when the event loop has stopped (after [`Client::shutdown`], or when every
    /// client is dropped).
    pub task: JoinHandle<()>,
    api_task: Option<JoinHandle<()>>,
}

impl Node {
    /// Builds the swarm, starts listening and dialling, serves the API; must run inside a
    /// tokio runtime.
    pub async fn spawn(config: NodeConfig) -> Result<Node, StartError> {
        let limits = Limits::default();
        let mut issuer = Issuer::new(config.keypair.clone(), limits);
        if let Some(dir) = &config.data_dir {
            config::restore_issued(dir, &mut issuer)?;
        }
        let peer_id = issuer.owner();
        let mut registry = Registry::default();
        let bytes = Arc::new(codec::ByteCounters::default());
        let swarm = behaviour::build_swarm(&config, &mut registry, bytes.clone())?;
        let metrics = metrics::Metrics::new(&mut registry, bytes);
        let listener = match config.api {
            Some(addr) if !addr.ip().is_loopback() && config.api_token.is_none() => {
                return Err(StartError::ApiWithoutToken(addr));
            }
            Some(addr) => Some(api::bind(addr).await?),
            None => None,
        };
        let api_token = config.api_token.clone();
        let (tx, rx) = mpsc::channel(client::COMMAND_QUEUE);
        let (changes, _) = tokio::sync::broadcast::channel(client::WATCH_QUEUE);
        let client = Client::new(tx, changes.clone());
        let mut event_loop =
            event_loop::EventLoop::new(swarm, issuer, config, rx, changes, registry, metrics);
        event_loop.start()?;
        let task = tokio::spawn(event_loop.run());
        let mut api_addr = None;
        let api_task = match listener {
            Some(listener) => {
                api_addr = listener.local_addr().ok();
                let api_client = client.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = api::serve(listener, api_client, api_token).await {
                        tracing::error!("API server failed: {e}");
                    }
                }))
            }
            None => None,
        };
        Ok(Node {
            client,
            api_addr,
            peer_id,
            task,
            api_task,
        })
    }

    /// Graceful stop: withdraws this node's records, pushes the withdrawals for a few rounds,
    /// then stops the event loop and the API.
    pub async fn shutdown(self) {
        let _ = self.client.shutdown().await;
        let _ = self.task.await;
        if let Some(api) = self.api_task {
            api.abort();
        }
    }

    /// Stops at once without withdrawing anything (as a crash would).
    pub fn abort(self) {
        self.task.abort();
        if let Some(api) = self.api_task {
            api.abort();
        }
    }
}
