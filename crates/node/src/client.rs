//! The handle to a running node: a cloneable [`Client`] that sends [`Command`]s, each with a
//! oneshot reply, over a bounded channel to the event loop.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Capacity of the command channel: callers wait (backpressure) when the loop is behind.
pub const COMMAND_QUEUE: usize = 64;
/// Changes buffered for each watcher; one that falls further behind loses the oldest (and is
/// told how many, see [`Client::watch`]).
pub const WATCH_QUEUE: usize = 1024;
/// Most watchers at once (API streams and in-process subscribers together).
pub const MAX_WATCHERS: usize = 64;

/// A record as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordView {
    pub owner: String,
    pub name: String,
    pub capabilities: Vec<String>,
    pub endpoint: Option<String>,
    pub meta: BTreeMap<String, String>,
    pub seq: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    pub id: String,
}

/// What a merged record changed in the directory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A specialist, new or a newer version (a refresh included).
    Specialist,
    /// A node record, new or a newer version.
    Node,
    /// A withdrawal: the record named by `owner` and `name` is gone.
    Withdrawn,
}

/// One record merged into this node's directory (from a peer or from this node itself), as a
/// watcher sees it; expiries are not reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub record: RecordView,
}

/// A peer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerView {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub connected: bool,
    pub relayed: bool,
    /// The peer has a live node record in the directory.
    pub in_directory: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Connections {
    pub direct: usize,
    pub relayed: usize,
}

/// What `GET /v1/status` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub external_addrs: Vec<String>,
    /// Addresses in this node's published node record.
    pub advertised_addrs: Vec<String>,
    /// Live records held (node records and specialists, withdrawals excluded).
    pub records: usize,
    /// Live specialists held.
    pub specialists: usize,
    /// Live node records held.
    pub nodes: usize,
    /// Specialists announced by this node.
    pub own_specialists: Vec<String>,
    pub connections: Connections,
    /// Gossip rounds run so far.
    pub round: u64,
    /// Bytes of sync-protocol messages (encoded requests and responses, periodic exchanges
    /// and pushes alike; no transport framing) since the node started.
    pub gossip_bytes: GossipBytes,
    pub nat_status: String,
    /// Correction applied to the local clock for records: the median offset of sampled peers'
    /// clocks (0 until 5 peers were sampled), in ms.
    pub clock_offset_ms: i64,
    /// Peers whose clock was sampled.
    pub clock_peers: usize,
    pub uptime_secs: u64,
}

/// Sync-protocol payload bytes, each way.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct GossipBytes {
    pub received: u64,
    pub sent: u64,
}

/// A specialist to announce.
#[derive(Debug, Clone, Default)]
pub struct Announce {
    pub name: String,
    pub capabilities: Vec<String>,
    pub endpoint: Option<String>,
    pub meta: BTreeMap<String, String>,
    /// Lifetime of the record (refreshed at a third of it); none: the node's TTL.
    pub ttl: Option<Duration>,
}

/// Why a command failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Full(String),
    #[error("the node is stopping or stopped")]
    Stopped,
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

/// Work for the event loop.
#[derive(Debug)]
pub enum Command {
    Status(Reply<Status>),
    Query {
        capabilities: Vec<String>,
        reply: Reply<Vec<RecordView>>,
    },
    Peers(Reply<Vec<PeerView>>),
    Announce {
        announce: Announce,
        reply: Reply<Result<RecordView, NodeError>>,
    },
    Withdraw {
        name: String,
        reply: Reply<Result<bool, NodeError>>,
    },
    Metrics(Reply<String>),
    /// Withdraw everything, push the withdrawals for a few rounds, stop. Replies when stopped.
    Shutdown(Reply<()>),
}

/// Cloneable handle to a node's event loop.
#[derive(Debug, Clone)]
pub struct Client {
    sender: mpsc::Sender<Command>,
    changes: broadcast::Sender<Change>,
}

impl Client {
    pub(crate) fn new(sender: mpsc::Sender<Command>, changes: broadcast::Sender<Change>) -> Self {
        Self { sender, changes }
    }

    /// Every record merged from now on, in merge order, as the event loop merges it (no
    /// polling). A watcher more than [`WATCH_QUEUE`] changes behind gets
    /// `RecvError::Lagged(n)` once and continues with the oldest change still buffered; the
    /// receiver reports `Closed` when the node stops. At most [`MAX_WATCHERS`] at once.
    pub fn watch(&self) -> Result<broadcast::Receiver<Change>, NodeError> {
        if self.changes.receiver_count() >= MAX_WATCHERS {
            return Err(NodeError::Full(format!(
                "{MAX_WATCHERS} watchers already follow this node's changes"
            )));
        }
        Ok(self.changes.subscribe())
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    pub async fn status(&self) -> Result<Status, NodeError> {
        self.call(Command::Status).await
    }

    /// Live specialists having every capability in `capabilities` (all when empty).
    pub async fn query(&self, capabilities: Vec<String>) -> Result<Vec<RecordView>, NodeError> {
        self.call(|reply| Command::Query {
            capabilities,
            reply,
        })
        .await
    }

    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.call(Command::Peers).await
    }

    pub async fn announce(&self, announce: Announce) -> Result<RecordView, NodeError> {
        self.call(|reply| Command::Announce { announce, reply })
            .await?
    }

    /// Withdraws a specialist; `Ok(false)` when this node never announced it.
    pub async fn withdraw(&self, name: &str) -> Result<bool, NodeError> {
        let name = name.to_owned();
        self.call(|reply| Command::Withdraw { name, reply }).await?
    }

    /// Prometheus text.
    pub async fn metrics(&self) -> Result<String, NodeError> {
        self.call(Command::Metrics).await
    }

    /// Resolves when the event loop has stopped.
    pub async fn closed(&self) {
        self.sender.closed().await
    }

    /// Graceful stop; returns when the event loop has stopped.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.call(Command::Shutdown).await
    }
}
