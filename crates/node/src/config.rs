//! Node settings, the identity key file and the persisted issuer state.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use directory::{Issued, Issuer, Keypair, Multiaddr};

use crate::error::StartError;

/// Default lifetime of the records a node issues. Records are refreshed at a third of it, so
/// a node that disappears without withdrawing is gone from every directory within this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default lifetime of a node's specialist records. A specialist is listed only while its
/// owner's node record is live (`directory::Store::listed`), so a node that disappears takes
/// its specialists with it within [`DEFAULT_TTL`]; their own, longer lifetime only sets how
/// often they are re-signed (at a third of it) and how long an unlisted copy stays held.
pub const DEFAULT_SPECIALIST_TTL: Duration = Duration::from_secs(600);
/// Default gossip round interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default API address (loopback only).
pub const DEFAULT_API: &str = "127.0.0.1:5170";
/// Default libp2p port (TCP and QUIC).
pub const DEFAULT_PORT: u16 = 4101;
/// Protocol string advertised in node records.
pub const NODE_PROTOCOL: &str = "gossipdir/1";

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub keypair: Keypair,
    pub listen: Vec<Multiaddr>,
    /// Peers to join through; each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Where the issuer state is kept (`issued.json`); none: not persisted.
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API; none: no API.
    pub api: Option<SocketAddr>,
    /// Bearer token every API request must carry; required when `api` is not loopback.
    pub api_token: Option<String>,
    pub interval: Duration,
    pub fanout: usize,
    /// Peers a record new to this node is pushed to at once (0: only periodic exchanges).
    pub push_fanout: usize,
    /// Further peers told only the ids of news, which fetch what they lack (`None`: the
    /// engine's ⌈ln N⌉ + 3; `Some(0)`: off).
    pub announce_fanout: Option<usize>,
    /// Members this node gossips with in its rounds, a random subset stable as the
    /// federation grows, so that connections stay bounded (0: every member). With a view,
    /// the node runs no Kademlia (see [`NodeConfig::kademlia`]) and leaves the refreshes it
    /// merges to the rounds (`gossip::Config::forward_refreshes`).
    pub view_size: usize,
    /// Lifetime of this node's node record (refreshed at a third of it): how long the node's
    /// specialists stay listed after it disappears.
    pub ttl: Duration,
    /// Default lifetime of this node's specialist records (refreshed at a third of it).
    pub specialist_ttl: Duration,
    pub mdns: bool,
    pub relay_server: bool,
    /// Relays to reserve a slot on (`/p2p-circuit`), each ending in `/p2p/<relay id>`.
    pub relays: Vec<Multiaddr>,
    /// Addresses to advertise as externally reachable.
    pub external: Vec<Multiaddr>,
    pub max_connections: u32,
    pub max_message_bytes: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    /// Rounds spent pushing withdrawals on shutdown.
    pub shutdown_rounds: u32,
    /// Kademlia random walk period.
    pub random_walk: Duration,
    /// Seed of the engine's randomness (none: random).
    pub seed: Option<u64>,
}

impl NodeConfig {
    /// Members a node gossips with by default (partial view; 0 = every member).
    pub const DEFAULT_VIEW_SIZE: usize = 0;

    /// Whether the node runs Kademlia (bootstrap query, random walks, serving the DHT). Not
    /// with a partial view: membership then comes from bootstrap peers, mDNS and the
    /// directory's node records (which carry addresses), and Kademlia's queries (libp2p
    /// re-bootstraps whenever a peer enters a small routing table) open connections to
    /// ~k·log N peers per joining node, the very cost the view bounds.
    pub fn kademlia(&self) -> bool {
        self.view_size == 0
    }

    /// Defaults around a key: listen on TCP and QUIC port 4101 on all interfaces.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: default_listen(DEFAULT_PORT),
            bootstrap: Vec::new(),
            data_dir: None,
            api: DEFAULT_API.parse().ok(),
            api_token: None,
            interval: DEFAULT_INTERVAL,
            fanout: 2,
            push_fanout: gossip::Config::default().push_fanout,
            announce_fanout: gossip::Config::default().announce_fanout,
            view_size: Self::DEFAULT_VIEW_SIZE,
            ttl: DEFAULT_TTL,
            specialist_ttl: DEFAULT_SPECIALIST_TTL,
            mdns: true,
            relay_server: false,
            relays: Vec::new(),
            external: Vec::new(),
            max_connections: 256,
            max_message_bytes: gossip::wire::MAX_MESSAGE_BYTES,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_rounds: 3,
            random_walk: Duration::from_secs(30),
            seed: None,
        }
    }
}

/// `/ip4/0.0.0.0/tcp/PORT` and `/ip4/0.0.0.0/udp/PORT/quic-v1`.
pub fn default_listen(port: u16) -> Vec<Multiaddr> {
    [
        format!("/ip4/0.0.0.0/tcp/{port}"),
        format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
    ]
    .iter()
    .filter_map(|a| a.parse().ok())
    .collect()
}

/// Loads the protobuf-encoded key at `path`, or creates an ed25519 one (mode 0600) when the
/// file does not exist. A file that exists but does not decode is an error.
pub fn load_or_create_key(path: &Path) -> Result<Keypair, StartError> {
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|_| StartError::KeyDamaged(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            write_key(path, &keypair)?;
            Ok(keypair)
        }
        Err(e) => Err(StartError::file("reading key file", path)(e)),
    }
}

/// Writes a new key file with mode 0600; fails if the file exists.
pub fn write_key(path: &Path, keypair: &Keypair) -> Result<(), StartError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(StartError::file("creating directory", dir))?;
    }
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| StartError::KeyEncoding(e.to_string()))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(StartError::file("creating key file", path))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(StartError::file("writing key file", path))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IssuedEntry {
    seq: u64,
    expires_at: u64,
}

const ISSUED_FILE: &str = "issued.json";

/// Restores what earlier runs issued from `<dir>/issued.json`, if present.
pub fn restore_issued(dir: &Path, issuer: &mut Issuer) -> Result<(), StartError> {
    let path = dir.join(ISSUED_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StartError::file("reading issuer state", path)(e)),
    };
    let entries: BTreeMap<String, IssuedEntry> =
        serde_json::from_slice(&bytes).map_err(|_| StartError::StateDamaged(path.clone()))?;
    for (name, e) in entries {
        issuer.restore(
            &name,
            Issued {
                seq: e.seq,
                expires_at: e.expires_at,
            },
        );
    }
    Ok(())
}

/// Saves the issuer state atomically (write then rename).
pub fn save_issued(dir: &Path, issuer: &Issuer) -> Result<(), StartError> {
    let failed = StartError::file("writing issuer state", dir.join(ISSUED_FILE));
    fs::create_dir_all(dir).map_err(StartError::file("creating directory", dir))?;
    let entries: BTreeMap<&str, IssuedEntry> = issuer
        .issued()
        .map(|(n, i)| {
            (
                n,
                IssuedEntry {
                    seq: i.seq,
                    expires_at: i.expires_at,
                },
            )
        })
        .collect();
    let tmp = dir.join(format!("{ISSUED_FILE}.tmp"));
    // Serialising a map of strings and integers cannot fail.
    let json = serde_json::to_vec(&entries).unwrap_or_default();
    fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(&json).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&tmp, dir.join(ISSUED_FILE)))
        .map_err(failed)
}
