//! The libp2p behaviour of a node and the swarm around it (TCP+noise+yamux, QUIC, DNS,
//! relay client).

use std::sync::Arc;
use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, autonat, connection_limits, dcutr, identify, kad, mdns,
    memory_connection_limits, noise, ping, relay, request_response, tcp, yamux,
};
use prometheus_client::registry::Registry;

use crate::codec::{ByteCounters, SYNC_PROTOCOL, SyncCodec};
use crate::config::NodeConfig;
use crate::error::StartError;
use crate::liveness::Liveness;

/// Kademlia protocol name of gossipdir (a private DHT, not the public IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/gossipdir/kad/1.0.0");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/gossipdir/id/1.0.0";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub memory: memory_connection_limits::Behaviour,
    pub sync: request_response::Behaviour<SyncCodec>,
    /// Long-lived sync streams to connected peers ([`crate::link`]).
    pub link: libp2p_stream::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Off with a partial view (see [`NodeConfig::kademlia`]).
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub identify: identify::Behaviour,
    /// Ping on TCP and relayed connections ([`crate::liveness`]).
    pub ping: Liveness,
    pub autonat: autonat::Behaviour,
    pub relay_client: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub relay_server: Toggle<relay::Behaviour>,
}

/// Builds the swarm of a node; registers libp2p's bandwidth metrics in `registry`.
pub fn build_swarm(
    config: &NodeConfig,
    registry: &mut Registry,
    bytes: Arc<ByteCounters>,
) -> Result<Swarm<Behaviour>, StartError> {
    let transport = |e: &dyn std::fmt::Display| StartError::Transport(e.to_string());
    let max_message = config.max_message_bytes;
    let request_timeout = config.request_timeout;
    let max_connections = config.max_connections;
    let mdns_on = config.mdns;
    let relay_server = config.relay_server;
    let idle = config.idle_timeout;
    let kad_on = config.kademlia();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| transport(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| transport(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            let local = key.public().to_peer_id();
            let sync = request_response::Behaviour::with_codec(
                SyncCodec::new(max_message, bytes),
                [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    .with_max_concurrent_streams(64),
            );
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
            } else {
                None
            };
            let kad = kad_on.then(|| {
                let mut kad_config = kad::Config::new(KAD_PROTOCOL);
                kad_config.set_periodic_bootstrap_interval(Some(Duration::from_secs(300)));
                let mut kad = kad::Behaviour::with_config(
                    local,
                    kad::store::MemoryStore::new(local),
                    kad_config,
                );
                // Every node serves the DHT: nodes behind NAT are reached through relays.
                kad.set_mode(Some(kad::Mode::Server));
                kad
            });
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_agent_version(format!("gossipdir/{}", env!("CARGO_PKG_VERSION")))
                    .with_push_listen_addr_updates(true)
                    // No address cache of identify's own: it would hand the swarm every
                    // listen address a peer reports (loopback included) on each dial; the
                    // event loop keeps the addresses worth dialling.
                    .with_cache_size(0),
            );
            let autonat = autonat::Behaviour::new(
                local,
                autonat::Config {
                    boot_delay: Duration::from_secs(5),
                    ..Default::default()
                },
            );
            let relay_server =
                relay_server.then(|| relay::Behaviour::new(local, relay::Config::default()));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(max_connections))
                        .with_max_established_per_peer(Some(4))
                        .with_max_pending_incoming(Some(64))
                        .with_max_pending_outgoing(Some(64)),
                ),
                memory: memory_connection_limits::Behaviour::with_max_percentage(0.9),
                sync,
                link: libp2p_stream::Behaviour::new(),
                mdns: Toggle::from(mdns),
                kad: Toggle::from(kad),
                identify,
                ping: Liveness::new(ping::Config::new()),
                autonat,
                relay_client,
                dcutr: dcutr::Behaviour::new(local),
                relay_server: Toggle::from(relay_server),
            })
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}
