//! `gossipdir node`: run a node (libp2p swarm, gossip engine, local HTTP API) until SIGINT or
//! SIGTERM, then withdraw its records and stop. Also `gossipdir keygen`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use directory::Multiaddr;
use serde::Deserialize;

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Run a gossipdir node.
///
/// Every flag can also be set in a TOML file given with --config, under the flag's name
/// (e.g. `listen = ["/ip4/0.0.0.0/tcp/4101"]`, `data-dir = "/var/lib/gossipdir"`,
/// `interval = "1s"`, `no-mdns = true`); flags given on the command line win.
#[derive(clap::Args, Debug, Default)]
pub struct NodeArgs {
    /// Multiaddr to listen on (repeatable) [default: /ip4/0.0.0.0/tcp/4101 and
    /// /ip4/0.0.0.0/udp/4101/quic-v1].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Peer to join through, ending in /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Identity key file (protobuf-encoded ed25519), created with mode 0600 if missing
    /// [default: <data-dir>/key].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Directory for the key and the issuer state [default: $HOME/.local/share/gossipdir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the local HTTP API [default: 127.0.0.1:5170].
    #[arg(long, value_name = "ADDR:PORT")]
    pub api: Option<SocketAddr>,
    /// Token every API request must carry (`Authorization: Bearer …`); required to bind the
    /// API anywhere but loopback. Prefer the environment variable to keep it out of `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "GOSSIPDIR_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Gossip round interval, e.g. 1s, 500ms [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Peers contacted per round [default: 2].
    #[arg(long, value_name = "K")]
    pub fanout: Option<usize>,
    /// Peers a record new to this node is pushed to at once; 0 leaves spreading to the
    /// periodic exchanges alone [default: 1].
    #[arg(long, value_name = "K")]
    pub push_fanout: Option<usize>,
    /// Further peers told only the ids of a new record, which fetch it if they lack it
    /// (lazy push); 0 turns it off [default: ⌈ln N⌉ + 3 for N known nodes].
    #[arg(long, value_name = "K")]
    pub announce_fanout: Option<usize>,
    /// Members this node gossips with in its rounds (a partial view, stable as the federation
    /// grows, so connections stay bounded); 0 gossips with every member [default: 0]. With a
    /// view, peers come from bootstrap peers, mDNS and node records (no Kademlia), and
    /// refreshes learnt from peers are left to the rounds instead of pushed on.
    #[arg(long, value_name = "K")]
    pub view_size: Option<usize>,
    /// Lifetime of this node's node record; it is refreshed at a third of it, and the node's
    /// specialists vanish from every listing this long after the node does [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Default lifetime of the specialists this node announces. They are listed only while
    /// the node record lives, so this only sets how often they are re-signed (at a third of
    /// it) [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub specialist_ttl: Option<Duration>,
    /// Turn off mDNS discovery on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// Act as a circuit relay v2 server for other nodes.
    #[arg(long)]
    pub relay_server: bool,
    /// Relay to reserve a slot on, ending in /p2p/<relay id> (repeatable); the node then
    /// listens on and advertises <relay>/p2p-circuit.
    #[arg(long, value_name = "MULTIADDR")]
    pub relay: Vec<Multiaddr>,
    /// Address to advertise as externally reachable (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub external: Vec<Multiaddr>,
    /// TOML file with any of these settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr (filter with RUST_LOG) [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The TOML form of [`NodeArgs`].
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    key: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    api: Option<String>,
    api_token: Option<String>,
    interval: Option<String>,
    fanout: Option<usize>,
    push_fanout: Option<usize>,
    announce_fanout: Option<usize>,
    view_size: Option<usize>,
    ttl: Option<String>,
    specialist_ttl: Option<String>,
    #[serde(default)]
    no_mdns: bool,
    #[serde(default)]
    relay_server: bool,
    #[serde(default)]
    relay: Vec<String>,
    #[serde(default)]
    external: Vec<String>,
    log_format: Option<LogFormat>,
}

/// A record lifetime given on the command line (`flag`): between 1 s and 60 min.
pub fn check_ttl(flag: &str, ttl: Duration) -> anyhow::Result<Duration> {
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(3600) {
        bail!("{flag} must be between 1s and 60m");
    }
    Ok(ttl)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 1s, 500ms, 2m: {e}"))
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn addrs(field: &str, list: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("config {field}: {s:?} is not a multiaddr"))
        })
        .collect()
}

impl NodeArgs {
    /// Merges the config file (if any) under the command line.
    fn merged(mut self) -> anyhow::Result<NodeArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let f = read_file_config(&path)?;
        if self.listen.is_empty() {
            self.listen = addrs("listen", &f.listen)?;
        }
        if self.bootstrap.is_empty() {
            self.bootstrap = addrs("bootstrap", &f.bootstrap)?;
        }
        if self.relay.is_empty() {
            self.relay = addrs("relay", &f.relay)?;
        }
        if self.external.is_empty() {
            self.external = addrs("external", &f.external)?;
        }
        self.key = self.key.or(f.key);
        self.api_token = self.api_token.or(f.api_token);
        self.data_dir = self.data_dir.or(f.data_dir);
        if self.api.is_none()
            && let Some(api) = &f.api
        {
            self.api = Some(
                api.parse()
                    .with_context(|| format!("config api: {api:?} is not ADDR:PORT"))?,
            );
        }
        if self.interval.is_none()
            && let Some(d) = &f.interval
        {
            self.interval =
                Some(parse_duration(d).map_err(|e| anyhow::anyhow!("config interval: {e}"))?);
        }
        if self.ttl.is_none()
            && let Some(d) = &f.ttl
        {
            self.ttl = Some(parse_duration(d).map_err(|e| anyhow::anyhow!("config ttl: {e}"))?);
        }
        if self.specialist_ttl.is_none()
            && let Some(d) = &f.specialist_ttl
        {
            self.specialist_ttl =
                Some(parse_duration(d).map_err(|e| anyhow::anyhow!("config specialist-ttl: {e}"))?);
        }
        self.fanout = self.fanout.or(f.fanout);
        self.push_fanout = self.push_fanout.or(f.push_fanout);
        self.announce_fanout = self.announce_fanout.or(f.announce_fanout);
        self.view_size = self.view_size.or(f.view_size);
        self.no_mdns |= f.no_mdns;
        self.relay_server |= f.relay_server;
        self.log_format = self.log_format.or(f.log_format);
        Ok(self)
    }
}

/// Whether logs should be JSON (looks into the config file too; errors surface later).
pub fn wants_json_logs(args: &NodeArgs) -> bool {
    let from_file = args
        .config
        .as_deref()
        .and_then(|p| read_file_config(p).ok())
        .and_then(|f| f.log_format);
    args.log_format.or(from_file) == Some(LogFormat::Json)
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/gossipdir"),
        None => PathBuf::from(".gossipdir"),
    }
}

/// Runs `gossipdir node` until SIGINT/SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let args = args.merged()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let key_path = args.key.clone().unwrap_or_else(|| data_dir.join("key"));
    let keypair = node::config::load_or_create_key(&key_path)?;
    let mut config = node::NodeConfig::new(keypair);
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.bootstrap = args.bootstrap;
    config.data_dir = Some(data_dir);
    if let Some(api) = args.api {
        config.api = Some(api);
    }
    if let Some(token) = args.api_token {
        if token.len() < 16 {
            bail!("--api-token must be at least 16 characters");
        }
        config.api_token = Some(token);
    }
    if let Some(interval) = args.interval {
        if interval < Duration::from_millis(10) {
            bail!("--interval must be at least 10ms");
        }
        config.interval = interval;
    }
    if let Some(fanout) = args.fanout {
        if fanout == 0 || fanout > 64 {
            bail!("--fanout must be between 1 and 64");
        }
        config.fanout = fanout;
    }
    if let Some(push_fanout) = args.push_fanout {
        if push_fanout > 64 {
            bail!("--push-fanout must be at most 64");
        }
        config.push_fanout = push_fanout;
    }
    if let Some(announce_fanout) = args.announce_fanout {
        if announce_fanout > 64 {
            bail!("--announce-fanout must be at most 64");
        }
        config.announce_fanout = Some(announce_fanout);
    }
    if let Some(view_size) = args.view_size {
        if view_size == 1 || view_size > 1024 {
            bail!("--view-size must be 0 (every member) or between 2 and 1024");
        }
        config.view_size = view_size;
    }
    if let Some(ttl) = args.ttl {
        config.ttl = check_ttl("--ttl", ttl)?;
    }
    if let Some(ttl) = args.specialist_ttl {
        config.specialist_ttl = check_ttl("--specialist-ttl", ttl)?;
    }
    config.mdns = !args.no_mdns;
    config.relay_server = args.relay_server;
    config.relays = args.relay;
    config.external = args.external;
    for a in config.bootstrap.iter().chain(&config.relays) {
        if node::event_loop::peer_of(a).is_none() {
            bail!("{a} does not end in /p2p/<peer id>");
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let node = node::Node::spawn(config).await?;
        tracing::info!(peer_id = %node.peer_id, api = ?node.api_addr, "node started");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        let stopped_early = tokio::select! {
            _ = tokio::signal::ctrl_c() => false,
            _ = term.recv() => false,
            _ = node.client.closed() => true,
        };
        if stopped_early {
            bail!("the node stopped unexpectedly");
        }
        tracing::info!("signal received, withdrawing and stopping");
        if tokio::time::timeout(Duration::from_secs(15), node.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown took too long, stopping anyway");
        }
        Ok(())
    })
}

/// Options of `gossipdir keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the new key (protobuf-encoded ed25519, mode 0600); never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Writes a new identity key and prints its PeerId.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let keypair = directory::Keypair::generate_ed25519();
    node::config::write_key(&args.out, &keypair)?;
    println!("{}", keypair.public().to_peer_id());
    Ok(())
}
