//! The event loop: owns the swarm and the gossip engine, and `select!`s between swarm events,
//! client commands and the round ticker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use directory::{
    Content, Issuer, Key, Multiaddr, NODE_RECORD_NAME, NodeInfo, PeerId, Record, Rejection,
    Specialist,
};
use futures::StreamExt;
use gossip::{ChannelId, Engine, ExchangeId, Input, Output, Response};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Swarm, autonat, identify, kad, mdns, ping, relay};
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::client::{
    Announce, Change, ChangeKind, Command, Connections, NodeError, PeerView, RecordView, Status,
};
use crate::codec::SYNC_PROTOCOL;
use crate::config::{self, NODE_PROTOCOL, NodeConfig};
use crate::error::StartError;
use crate::link::{self, LinkContext, LinkEvent, LinkId};
use crate::metrics::{self, Metrics};

/// Protocol of relay servers (circuit relay v2 hop), seen through identify.
const RELAY_HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";
/// Strikes (protocol violations) before a peer is banned.
const MAX_STRIKES: u32 = 3;
/// How long a banned peer is refused.
const BAN_MS: u64 = 10 * 60_000;
/// Most peers tracked for penalties, addresses and relay candidates.
const MAX_TRACKED_PEERS: usize = 4096;
/// Most addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Most inbound requests awaiting the engine's answer.
const MAX_INBOUND: usize = 256;
/// Most outbound requests in flight.
const MAX_OUTBOUND: usize = 256;
/// Most peers listed by the API.
const MAX_PEERS_LISTED: usize = 1000;
/// How often a failed relay reservation is retried.
const RELAY_RETRY: Duration = Duration::from_secs(30);
/// How soon a reservation that was lost (listener closed) is retried.
const RELAY_RELISTEN: Duration = Duration::from_secs(5);
/// A change of the clock correction beyond this re-issues our records at once.
const CLOCK_REFRESH_THRESHOLD_MS: u64 = 1_000;
/// Sync requests to one peer timing out in a row, with no answer between, after which its
/// connections are closed so that the next exchange dials a fresh one. Under heavy loss a TCP
/// connection backs off its retransmissions for tens of seconds while every new request
/// queues behind the old ones: without this it never recovers (measured: 2 minutes of
/// nothing but timeouts at 50 % loss).
const STALLED_AFTER_TIMEOUTS: u32 = 3;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct OwnSpecialist {
    specialist: Specialist,
    ttl_ms: u64,
    refresh_at: u64,
}

#[derive(Default)]
struct Penalty {
    strikes: u32,
    banned_until: u64,
}

struct Stopping {
    ticks: u32,
    replies: Vec<oneshot::Sender<()>>,
}

/// Where the answer to an inbound request goes.
enum Reply {
    /// A request-response substream.
    Substream(ResponseChannel<Response>),
    /// Request `id` of an inbound link.
    Link { link: LinkId, id: u64 },
    /// Nowhere: a one-way request of a link ([`link::ONE_WAY`]).
    None,
}

/// Our link to a peer.
struct OutLink {
    id: LinkId,
    requests: mpsc::Sender<(u64, gossip::Request)>,
    last_used: Instant,
}

/// A peer's link to us.
struct InLink {
    responses: mpsc::Sender<(u64, Response)>,
}

/// A request sent on a link, awaiting its response.
struct LinkRequest {
    exchange: ExchangeId,
    peer: PeerId,
    sent: Instant,
}

/// Aborts a task when dropped (the event loop's helper tasks end with it).
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    engine: Engine,
    issuer: Issuer,
    config: NodeConfig,
    commands: mpsc::Receiver<Command>,
    /// The change feed ([`crate::Client::watch`]).
    changes: broadcast::Sender<Change>,
    registry: Registry,
    metrics: Metrics,
    local: PeerId,
    started: Instant,
    /// Request-response requests in flight: the exchange each reports to, `None` for a
    /// one-way request (its answer is dropped).
    outbound: HashMap<OutboundRequestId, Option<ExchangeId>>,
    inbound: HashMap<ChannelId, Reply>,
    next_channel: ChannelId,
    /// Links ([`crate::link`]): ours by peer, peers' by link, requests awaiting answers.
    link_control: libp2p_stream::Control,
    link_events: mpsc::Receiver<LinkEvent>,
    link_cx: LinkContext,
    links_out: HashMap<PeerId, OutLink>,
    links_in: HashMap<LinkId, InLink>,
    link_in_by_peer: HashMap<PeerId, LinkId>,
    link_requests: HashMap<(LinkId, u64), LinkRequest>,
    /// Peers that do not speak the link protocol: request-response only.
    no_link: HashSet<PeerId>,
    next_link: LinkId,
    next_link_request: u64,
    _accept_links: Option<TaskGuard>,
    specialists: BTreeMap<String, OwnSpecialist>,
    node_refresh_at: u64,
    /// Clock correction our records were last issued with.
    refreshed_at_offset: i64,
    published_addrs: Vec<Multiaddr>,
    addrs_dirty: bool,
    issued_dirty: bool,
    connections: HashMap<PeerId, HashMap<ConnectionId, (Multiaddr, bool)>>,
    known_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    penalties: HashMap<PeerId, Penalty>,
    /// Sync requests timed out in a row, by connected peer.
    timeouts_in_a_row: HashMap<PeerId, u32>,
    bootstrap_peers: HashSet<PeerId>,
    relay_candidates: BTreeMap<PeerId, Multiaddr>,
    relay_listening: HashSet<PeerId>,
    /// Relay listeners (reservations) by listener, to retry when one closes.
    relay_listeners: HashMap<ListenerId, PeerId>,
    relay_retry_at: Instant,
    nat_status: String,
    next_walk: Instant,
    stopping: Option<Stopping>,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        issuer: Issuer,
        config: NodeConfig,
        commands: mpsc::Receiver<Command>,
        changes: broadcast::Sender<Change>,
        registry: Registry,
        metrics: Metrics,
    ) -> Self {
        let local = *swarm.local_peer_id();
        let link_control = swarm.behaviour().link.new_control();
        let (link_tx, link_events) = mpsc::channel(link::EVENT_QUEUE);
        let link_cx = LinkContext {
            events: link_tx,
            limit: config.max_message_bytes,
            bytes: metrics.bytes.clone(),
        };
        let engine_config = gossip::Config {
            fanout: config.fanout,
            push_fanout: config.push_fanout,
            announce_fanout: config.announce_fanout,
            view_size: config.view_size,
            // A federation large enough for a view would send ~N·ln N messages per refresh.
            forward_refreshes: config.view_size == 0,
            max_message_bytes: config.max_message_bytes,
            exchange_timeout_ms: config.request_timeout.as_millis() as u64,
            ..gossip::Config::default()
        };
        let seed = config.seed.unwrap_or_else(rand::random);
        Self {
            engine: Engine::new(local, engine_config, seed),
            swarm,
            issuer,
            commands,
            changes,
            registry,
            metrics,
            local,
            started: Instant::now(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            next_channel: 0,
            link_control,
            link_events,
            link_cx,
            links_out: HashMap::new(),
            links_in: HashMap::new(),
            link_in_by_peer: HashMap::new(),
            link_requests: HashMap::new(),
            no_link: HashSet::new(),
            next_link: 0,
            next_link_request: 0,
            _accept_links: None,
            specialists: BTreeMap::new(),
            node_refresh_at: 0,
            refreshed_at_offset: 0,
            published_addrs: Vec::new(),
            addrs_dirty: true,
            issued_dirty: false,
            connections: HashMap::new(),
            known_addrs: HashMap::new(),
            penalties: HashMap::new(),
            timeouts_in_a_row: HashMap::new(),
            bootstrap_peers: HashSet::new(),
            relay_candidates: BTreeMap::new(),
            relay_listening: HashSet::new(),
            relay_listeners: HashMap::new(),
            relay_retry_at: Instant::now(),
            nat_status: "unknown".to_owned(),
            next_walk: Instant::now() + Duration::from_secs(2),
            stopping: None,
            config,
        }
    }

    /// Starts listening and dialling (listen addresses, bootstrap peers, relays).
    pub(crate) fn start(&mut self) -> Result<(), StartError> {
        self.withdraw_earlier_specialists();
        self.accept_links()?;
        for addr in self.config.listen.clone() {
            self.swarm
                .listen_on(addr.clone())
                .map_err(|e| StartError::Listen {
                    addr,
                    reason: e.to_string(),
                })?;
        }
        for addr in self.config.external.clone() {
            self.swarm.add_external_address(addr);
        }
        for addr in self.config.bootstrap.clone() {
            let Some(peer) = peer_of(&addr) else {
                return Err(StartError::MissingPeerId {
                    what: "bootstrap",
                    addr,
                });
            };
            if peer == self.local {
                continue;
            }
            self.bootstrap_peers.insert(peer);
            let bare = without_p2p(&addr);
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(&peer, bare.clone());
            }
            self.swarm.add_peer_address(peer, bare.clone());
            self.remember_addr(peer, bare);
            self.feed(Input::PeerDiscovered(peer));
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(%addr, "cannot dial bootstrap peer: {e}");
            }
        }
        if !self.bootstrap_peers.is_empty()
            && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
        {
            let _ = kad.bootstrap();
        }
        for relay in self.config.relays.clone() {
            if peer_of(&relay).is_none() {
                return Err(StartError::MissingPeerId {
                    what: "relay",
                    addr: relay,
                });
            }
        }
        self.listen_on_relays();
        Ok(())
    }

    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(event) = self.link_events.recv() => self.on_link_event(event),
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        commands_open = false;
                        self.begin_stop(None);
                    }
                },
                _ = ticker.tick() => {
                    if self.on_tick() {
                        break;
                    }
                }
            }
        }
        self.save_issued();
        info!("node stopped");
        if let Some(stopping) = self.stopping.take() {
            for reply in stopping.replies {
                let _ = reply.send(());
            }
        }
    }

    // ---- the engine -------------------------------------------------------------------

    fn feed(&mut self, input: Input) {
        let outputs = self.engine.handle(input, now_ms());
        self.apply(outputs);
    }

    fn apply(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send {
                    to,
                    exchange,
                    request,
                } => {
                    if self.is_banned(&to) || self.outbound.len() >= MAX_OUTBOUND {
                        self.feed(Input::Failed { exchange });
                        continue;
                    }
                    let Err(request) = self.send_on_link(to, exchange, request) else {
                        continue;
                    };
                    let addrs = self.dial_addrs(&to);
                    if !self.swarm.is_connected(&to) {
                        debug!(%to, request = request.kind(), "dialing to send a request");
                    }
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_request_with_addresses(&to, request, addrs);
                    self.outbound.insert(id, Some(exchange));
                }
                Output::Notify { to, request } => self.notify(to, request),
                Output::Respond { channel, response } => {
                    if let Some(reply) = self.inbound.remove(&channel) {
                        self.reply(reply, response);
                    }
                }
                Output::Misbehaved { peer, reason } => self.penalise(peer, reason),
                Output::Merged(records) => self.publish_changes(&records),
            }
        }
    }

    /// Tells the watchers, if any, what was merged.
    fn publish_changes(&self, records: &[std::sync::Arc<Record>]) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        for record in records {
            let kind = if record.withdrawn() {
                ChangeKind::Withdrawn
            } else if matches!(record.body().content, Content::Node(_)) {
                ChangeKind::Node
            } else {
                ChangeKind::Specialist
            };
            // Fails only when every watcher is gone meanwhile: nothing to tell.
            let _ = self.changes.send(Change {
                kind,
                record: record_view(record),
            });
        }
    }

    /// Addresses to reach `peer` with: its node record's, then what discovery told us.
    fn dial_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addrs = Vec::new();
        let key = Key {
            owner: *peer,
            name: NODE_RECORD_NAME.to_owned(),
        };
        if let Some(record) = self.engine.store().get(&key)
            && !record.withdrawn()
            && let Content::Node(info) = &record.body().content
        {
            addrs.extend(info.addrs.iter().cloned());
        }
        if let Some(known) = self.known_addrs.get(peer) {
            for a in known {
                if !addrs.contains(a) {
                    addrs.push(a.clone());
                }
            }
        }
        if !self.dials_loopback() {
            addrs.retain(|a| !is_loopback(a));
        }
        addrs
    }

    /// Whether other peers' loopback addresses are worth dialling: only when this node itself
    /// listens on loopback alone (every node on one host). Otherwise a peer's `127.0.0.1`
    /// address reaches this host, often this very node (same default port): that attempt,
    /// the fastest of a dial's concurrent attempts, fails with a wrong peer id and aborts the
    /// whole dial, relayed attempts included.
    fn dials_loopback(&self) -> bool {
        !self
            .swarm
            .listeners()
            .any(|a| !is_loopback(a) && !is_relayed(a) && !is_unspecified(a))
    }

    fn penalise(&mut self, peer: PeerId, reason: Rejection) {
        self.metrics.misbehaviour.inc();
        warn!(%peer, reason = reason.as_str(), "peer sent an invalid record");
        let now = now_ms();
        if !self.penalties.contains_key(&peer) && self.penalties.len() >= MAX_TRACKED_PEERS {
            self.penalties.retain(|_, p| p.banned_until > now);
            if self.penalties.len() >= MAX_TRACKED_PEERS {
                return;
            }
        }
        let entry = self.penalties.entry(peer).or_default();
        entry.strikes += 1;
        if entry.strikes >= MAX_STRIKES {
            entry.strikes = 0;
            entry.banned_until = now + BAN_MS;
            warn!(%peer, "banning peer for {} s", BAN_MS / 1000);
            let _ = self.swarm.disconnect_peer_id(peer);
            self.feed(Input::PeerGone(peer));
        }
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.penalties
            .get(peer)
            .is_some_and(|p| p.banned_until > now_ms())
    }

    // ---- rounds -----------------------------------------------------------------------

    /// One round. Returns true when the loop must stop.
    fn on_tick(&mut self) -> bool {
        self.feed(Input::Tick);
        self.tend_links();
        let now = self.record_now();
        if self.stopping.is_none() {
            self.follow_clock_correction();
            self.refresh_records(now);
            if Instant::now() >= self.next_walk
                && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
            {
                self.next_walk = Instant::now() + self.config.random_walk;
                kad.get_closest_peers(PeerId::random());
            }
            if Instant::now() >= self.relay_retry_at {
                self.listen_on_relays();
            }
        }
        if self.issued_dirty {
            self.save_issued();
        }
        self.update_metrics();
        if let Some(stopping) = &mut self.stopping {
            stopping.ticks += 1;
            let done = stopping.ticks >= self.config.shutdown_rounds
                || (stopping.ticks >= 1 && self.engine.in_flight() == 0);
            return done;
        }
        false
    }

    /// Time records are issued by: the local clock corrected by the median offset of sampled
    /// peers (see `gossip::clock`). The store judges expiry by `Engine::store_time`.
    fn record_now(&self) -> u64 {
        self.engine.network_time(now_ms())
    }

    /// When the clock correction moved by more than a second, our records were issued on a
    /// clock the others disagree with (a node behind them issued records that are about to
    /// expire for them): re-issue everything now instead of at the next refresh.
    fn follow_clock_correction(&mut self) {
        let offset = self.engine.clock().offset_ms();
        if offset.abs_diff(self.refreshed_at_offset) > CLOCK_REFRESH_THRESHOLD_MS {
            info!(
                offset_ms = offset,
                peers = self.engine.clock().peers_sampled(),
                "clock correction changed: re-issuing our records"
            );
            self.refreshed_at_offset = offset;
            self.node_refresh_at = 0;
            for own in self.specialists.values_mut() {
                own.refresh_at = 0;
            }
        }
    }

    /// Withdraws the specialists an earlier run of this node issued (restored issuer state)
    /// that may still be live: this run does not announce them, and since specialists are
    /// kept alive by the node record (`node_lease`), this run's node record would otherwise
    /// list them again until their own, long, expiry. Announcing one again afterwards issues
    /// a newer version, which replaces the withdrawal.
    fn withdraw_earlier_specialists(&mut self) {
        let now = self.record_now();
        let earlier: Vec<String> = self
            .issuer
            .issued()
            .filter(|(name, issued)| *name != NODE_RECORD_NAME && issued.expires_at > now)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !earlier.is_empty() {
            info!(names = ?earlier, "withdrawing the specialists of an earlier run");
            self.publish_withdrawals(earlier);
        }
    }

    /// Issues and publishes a withdrawal of each of `names` (it lives `--ttl`, and at least as
    /// long as every version it replaces); a name the issuer refuses is logged and skipped.
    fn publish_withdrawals(&mut self, names: Vec<String>) {
        let now = self.record_now();
        let ttl = self.config.ttl.as_millis() as u64;
        for name in names {
            match self.issuer.withdrawal(&name, ttl, now) {
                Ok(record) => {
                    self.issued_dirty = true;
                    self.feed(Input::Publish(record));
                }
                Err(e) => warn!(name, "cannot issue a withdrawal: {e}"),
            }
        }
    }

    fn refresh_records(&mut self, now: u64) {
        let addrs = self.advertised_addrs();
        if addrs != self.published_addrs || now >= self.node_refresh_at || self.addrs_dirty {
            self.addrs_dirty = false;
            let ttl = self.config.ttl.as_millis() as u64;
            match self.issuer.node_record(
                NodeInfo {
                    addrs: addrs.clone(),
                    protocol: NODE_PROTOCOL.to_owned(),
                },
                ttl,
                now,
            ) {
                Ok(record) => {
                    if addrs != self.published_addrs {
                        info!(addrs = ?addrs, "publishing node record");
                    }
                    self.published_addrs = addrs;
                    self.node_refresh_at = now + ttl / 3;
                    self.issued_dirty = true;
                    self.feed(Input::Publish(record));
                }
                Err(e) => warn!("cannot issue the node record: {e}"),
            }
        }
        let due: Vec<String> = self
            .specialists
            .iter()
            .filter(|(_, s)| now >= s.refresh_at)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(own) = self.specialists.get_mut(&name) else {
                continue;
            };
            own.refresh_at = now + own.ttl_ms / 3;
            let (specialist, ttl) = (own.specialist.clone(), own.ttl_ms);
            match self.issuer.specialist(&name, specialist, ttl, now) {
                Ok(record) => {
                    self.issued_dirty = true;
                    self.feed(Input::Publish(record));
                }
                Err(e) => warn!(name, "cannot refresh specialist: {e}"),
            }
        }
    }

    /// This node's addresses for its node record: external, relayed, then listen addresses
    /// (non-loopback first), at most the record limit.
    fn advertised_addrs(&self) -> Vec<Multiaddr> {
        let mut external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let mut relayed = Vec::new();
        let mut public = Vec::new();
        let mut loopback = Vec::new();
        for a in self.swarm.listeners() {
            if is_relayed(a) {
                relayed.push(a.clone());
            } else if is_loopback(a) {
                loopback.push(a.clone());
            } else if !is_unspecified(a) {
                public.push(a.clone());
            }
        }
        external.extend(relayed);
        external.extend(public);
        external.extend(loopback);
        let mut out: Vec<Multiaddr> = Vec::new();
        for a in external {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out.truncate(self.engine.config().limits.max_addrs);
        out
    }

    fn listen_on_relays(&mut self) {
        self.relay_retry_at = Instant::now() + RELAY_RETRY;
        let mut relays: Vec<Multiaddr> = self.config.relays.clone();
        if relays.is_empty() && self.nat_status == "private" {
            // Not reachable and no relay configured: use a relay server we know of.
            relays.extend(
                self.relay_candidates
                    .iter()
                    .map(|(p, a)| without_p2p(a).with(Protocol::P2p(*p)))
                    .take(1),
            );
        }
        for relay in relays {
            let Some(peer) = peer_of(&relay) else {
                continue;
            };
            if self.relay_listening.contains(&peer) || peer == self.local {
                continue;
            }
            if !self.swarm.is_connected(&peer) {
                // Connect first and reserve once connected (`ConnectionEstablished`): the
                // relay client's own dial is refused while another dial to the relay (e.g.
                // the bootstrap dial) is pending, and the reservation is then dropped.
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![without_p2p(&relay)])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                let _ = self.swarm.dial(opts);
                continue;
            }
            match self
                .swarm
                .listen_on(relay.clone().with(Protocol::P2pCircuit))
            {
                Ok(listener) => {
                    info!(%relay, "reserving a relay slot");
                    self.relay_listening.insert(peer);
                    self.relay_listeners.insert(listener, peer);
                }
                Err(e) => warn!(%relay, "cannot listen through relay: {e}"),
            }
        }
    }

    fn save_issued(&mut self) {
        self.issued_dirty = false;
        if let Some(dir) = &self.config.data_dir
            && let Err(e) = config::save_issued(dir, &self.issuer)
        {
            warn!("cannot save the issuer state: {e:#}");
        }
    }

    /// Live node records plus listed specialists, and the listed specialists alone (a
    /// specialist whose owner's node record is not live is held but not counted).
    fn live_records(&self) -> (usize, usize) {
        let now = self.engine.store_time(now_ms());
        let store = self.engine.store();
        let mut nodes = 0;
        let mut specialists = 0;
        for r in store.iter() {
            match r.body().content {
                Content::Node(_) if !r.withdrawn() && r.expires_at() > now => nodes += 1,
                Content::Specialist(_) if store.listed(r, now) => specialists += 1,
                _ => {}
            }
        }
        (nodes + specialists, specialists)
    }

    fn connection_counts(&self) -> Connections {
        let mut c = Connections::default();
        for conns in self.connections.values() {
            for (_, relayed) in conns.values() {
                if *relayed {
                    c.relayed += 1;
                } else {
                    c.direct += 1;
                }
            }
        }
        c
    }

    fn update_metrics(&mut self) {
        let (records, _) = self.live_records();
        let c = self.connection_counts();
        self.metrics
            .update(&self.engine, records, c.direct, c.relayed);
    }

    // ---- stopping ---------------------------------------------------------------------

    fn begin_stop(&mut self, reply: Option<oneshot::Sender<()>>) {
        if let Some(stopping) = &mut self.stopping {
            stopping.replies.extend(reply);
            return;
        }
        info!("stopping: withdrawing this node's records");
        self.stopping = Some(Stopping {
            ticks: 0,
            replies: reply.into_iter().collect(),
        });
        let mut names: Vec<String> = self.specialists.keys().cloned().collect();
        self.specialists.clear();
        names.push(NODE_RECORD_NAME.to_owned());
        self.publish_withdrawals(names);
        self.save_issued();
        // Reconcile with every connected peer at once, on top of the rumor pushes.
        let peers: Vec<PeerId> = self.connections.keys().copied().collect();
        for peer in peers {
            self.feed(Input::SyncWith(peer));
        }
    }

    // ---- commands ---------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Query {
                capabilities,
                reply,
            } => {
                let records = self
                    .engine
                    .store()
                    .query(&capabilities, self.engine.store_time(now_ms()))
                    .iter()
                    .map(|r| record_view(r))
                    .collect();
                let _ = reply.send(records);
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Announce { announce, reply } => {
                let result = if self.stopping.is_some() {
                    Err(NodeError::Stopped)
                } else {
                    self.announce(announce)
                };
                let _ = reply.send(result);
            }
            Command::Withdraw { name, reply } => {
                let result = if self.stopping.is_some() {
                    Err(NodeError::Stopped)
                } else {
                    self.withdraw(&name)
                };
                let _ = reply.send(result);
            }
            Command::Metrics(reply) => {
                self.update_metrics();
                let _ = reply.send(metrics::encode(&self.registry));
            }
            Command::Shutdown(reply) => self.begin_stop(Some(reply)),
        }
    }

    fn status(&self) -> Status {
        let (records, specialists) = self.live_records();
        Status {
            peer_id: self.local.to_string(),
            listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
            external_addrs: self
                .swarm
                .external_addresses()
                .map(|a| a.to_string())
                .collect(),
            advertised_addrs: self.published_addrs.iter().map(|a| a.to_string()).collect(),
            records,
            specialists,
            nodes: self.engine.store().nodes().len(),
            own_specialists: self.specialists.keys().cloned().collect(),
            connections: self.connection_counts(),
            round: self.engine.stats().rounds,
            gossip_bytes: self.metrics.gossip_bytes(),
            nat_status: self.nat_status.clone(),
            clock_offset_ms: self.engine.clock().offset_ms(),
            clock_peers: self.engine.clock().peers_sampled(),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    fn peers(&self) -> Vec<PeerView> {
        let store = self.engine.store();
        let mut ids: Vec<PeerId> = self.connections.keys().copied().collect();
        ids.extend(store.nodes().iter().copied());
        ids.extend(self.engine.peers().iter().copied());
        let mut seen = HashSet::new();
        ids.retain(|p| *p != self.local && seen.insert(*p));
        ids.truncate(MAX_PEERS_LISTED);
        ids.into_iter()
            .map(|peer| {
                let conns = self.connections.get(&peer);
                let mut addrs: Vec<String> = self
                    .dial_addrs(&peer)
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                if let Some(conns) = conns {
                    for (a, _) in conns.values() {
                        let a = a.to_string();
                        if !addrs.contains(&a) {
                            addrs.push(a);
                        }
                    }
                }
                PeerView {
                    peer_id: peer.to_string(),
                    addrs,
                    connected: conns.is_some_and(|c| !c.is_empty()),
                    relayed: conns.is_some_and(|c| c.values().any(|(_, r)| *r)),
                    in_directory: store.nodes().contains(&peer),
                }
            })
            .collect()
    }

    fn announce(&mut self, announce: Announce) -> Result<RecordView, NodeError> {
        let limits = self.engine.config().limits.clone();
        let name = announce.name;
        if !self.specialists.contains_key(&name)
            && self.specialists.len() + 1 >= limits.max_records_per_owner
        {
            return Err(NodeError::Full(format!(
                "this node already announces {} specialists, the most allowed",
                self.specialists.len()
            )));
        }
        let ttl_ms = announce
            .ttl
            .unwrap_or(self.config.specialist_ttl)
            .as_millis()
            .clamp(1000, limits.max_ttl_ms as u128) as u64;
        let specialist = Specialist {
            capabilities: announce.capabilities,
            endpoint: announce.endpoint,
            meta: announce.meta.into_iter().collect(),
            node_lease: true,
        };
        let now = self.record_now();
        let record = self
            .issuer
            .specialist(&name, specialist.clone(), ttl_ms, now)
            .map_err(rejection_error)?;
        self.issued_dirty = true;
        let key = record.key();
        let id = record.id();
        self.feed(Input::Publish(record));
        let held = self.engine.store().get(&key).cloned();
        match held {
            Some(r) if r.id() == id => {
                info!(name, "announced specialist");
                self.specialists.insert(
                    name,
                    OwnSpecialist {
                        specialist,
                        ttl_ms,
                        refresh_at: now + ttl_ms / 3,
                    },
                );
                Ok(record_view(&r))
            }
            _ => Err(NodeError::Full(
                "the directory refused the record (store full)".to_owned(),
            )),
        }
    }

    fn withdraw(&mut self, name: &str) -> Result<bool, NodeError> {
        if name.is_empty() {
            return Err(NodeError::Invalid {
                field: "name",
                message: "must not be empty".to_owned(),
            });
        }
        let own = self.specialists.remove(name);
        let key = Key {
            owner: self.local,
            name: name.to_owned(),
        };
        let held_live = self
            .engine
            .store()
            .get(&key)
            .is_some_and(|r| !r.withdrawn());
        if own.is_none() && !held_live {
            return Ok(false);
        }
        let ttl = own.map_or(self.config.ttl.as_millis() as u64, |o| o.ttl_ms);
        let record = self
            .issuer
            .withdrawal(name, ttl, self.record_now())
            .map_err(rejection_error)?;
        self.issued_dirty = true;
        info!(name, "withdrew specialist");
        self.feed(Input::Publish(record));
        Ok(true)
    }

    // ---- swarm events -----------------------------------------------------------------

    fn remember_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        if !self.known_addrs.contains_key(&peer) && self.known_addrs.len() >= MAX_TRACKED_PEERS {
            return;
        }
        let addrs = self.known_addrs.entry(peer).or_default();
        if !addrs.contains(&addr) {
            if addrs.len() >= MAX_ADDRS_PER_PEER {
                addrs.remove(0);
            }
            addrs.push(addr);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.libp2p.record(&event);
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.addrs_dirty = true;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                debug!(%address, "listen address expired");
                self.addrs_dirty = true;
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                // A reservation that failed before any address was confirmed closes its
                // listener with no address: retry through that relay too.
                if let Some(p) = self.relay_listeners.remove(&listener_id) {
                    self.relay_listening.remove(&p);
                    self.relay_retry_at = self.relay_retry_at.min(Instant::now() + RELAY_RELISTEN);
                }
                for a in &addresses {
                    if is_relayed(a) {
                        // Retry through the relay later.
                        if let Some(p) = relay_peer_of(a) {
                            self.relay_listening.remove(&p);
                        }
                    }
                }
                debug!(?addresses, ?reason, "listener closed");
                self.addrs_dirty = true;
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                self.addrs_dirty = true;
            }
            SwarmEvent::ExternalAddrExpired { .. } => self.addrs_dirty = true,
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                let relayed = endpoint.is_relayed();
                debug!(%peer_id, %addr, relayed, "connection established");
                if self.connections.len() < MAX_TRACKED_PEERS
                    || self.connections.contains_key(&peer_id)
                {
                    self.connections
                        .entry(peer_id)
                        .or_default()
                        .insert(connection_id, (addr, relayed));
                }
                self.feed(Input::Connected(peer_id));
                if !relayed && self.stopping.is_none() {
                    // Opened now, the link is ready when news comes: opening a substream
                    // took ~50 ms on a busy node (a temporary trace at N = 50), one hop's
                    // worth of delay had it waited for the first push.
                    self.open_link(peer_id);
                }
                if self.bootstrap_peers.contains(&peer_id) {
                    self.feed(Input::SyncWith(peer_id));
                }
                if !relayed && !self.relay_listening.contains(&peer_id) && self.stopping.is_none() {
                    let wanted = self
                        .config
                        .relays
                        .iter()
                        .any(|r| peer_of(r) == Some(peer_id))
                        || (self.config.relays.is_empty()
                            && self.nat_status == "private"
                            && self.relay_candidates.contains_key(&peer_id));
                    if wanted {
                        self.listen_on_relays();
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                debug!(%peer_id, ?cause, "connection closed");
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.remove(&connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if num_established == 0 {
                    self.timeouts_in_a_row.remove(&peer_id);
                    self.feed(Input::Disconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, "outgoing connection failed: {error}");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!("incoming connection failed: {error}");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Link(()) => {}
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    if peer == self.local {
                        continue;
                    }
                    debug!(%peer, %addr, "mdns discovered");
                    self.swarm.add_peer_address(peer, addr.clone());
                    self.remember_addr(peer, addr.clone());
                    // A gossip candidate at once: if the dial below loses a start-up race, the
                    // rounds dial it again (mDNS itself asks again only every 5 minutes).
                    self.discovered(peer);
                    if !self.swarm.is_connected(&peer) && !self.is_banned(&peer) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Kad(event) => {
                self.metrics.libp2p.record(&event);
                match event {
                    kad::Event::RoutingUpdated {
                        peer, addresses, ..
                    } => {
                        for a in addresses.iter() {
                            self.remember_addr(peer, a.clone());
                        }
                        self.discovered(peer);
                    }
                    kad::Event::OutboundQueryProgressed {
                        result: kad::QueryResult::GetClosestPeers(Ok(ok)),
                        ..
                    } => {
                        let loopback = self.dials_loopback();
                        for info in ok.peers {
                            for a in info.addrs {
                                if !loopback && is_loopback(&a) {
                                    continue;
                                }
                                self.swarm.add_peer_address(info.peer_id, a.clone());
                                self.remember_addr(info.peer_id, a);
                            }
                            self.discovered(info.peer_id);
                        }
                    }
                    _ => {}
                }
            }
            BehaviourEvent::Identify(event) => {
                self.metrics.libp2p.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    let speaks = |p: &str| info.protocols.iter().any(|q| q.as_ref() == p);
                    let loopback = self.dials_loopback();
                    let addrs: Vec<Multiaddr> = info
                        .listen_addrs
                        .iter()
                        .filter(|a| !is_unspecified(a) && (loopback || !is_loopback(a)))
                        .take(MAX_ADDRS_PER_PEER)
                        .cloned()
                        .collect();
                    if speaks(KAD_PROTOCOL.as_ref())
                        && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                    {
                        for a in &addrs {
                            kad.add_address(&peer_id, a.clone());
                        }
                    }
                    if speaks(RELAY_HOP_PROTOCOL)
                        && let Some(a) = addrs.iter().find(|a| !is_relayed(a))
                        && (self.relay_candidates.len() < 16
                            || self.relay_candidates.contains_key(&peer_id))
                    {
                        self.relay_candidates.insert(peer_id, a.clone());
                    }
                    if speaks(SYNC_PROTOCOL.as_ref()) {
                        for a in addrs {
                            self.remember_addr(peer_id, a);
                        }
                        let new = !self.engine.peers().contains(&peer_id);
                        self.discovered(peer_id);
                        if new && self.stopping.is_none() {
                            self.feed(Input::SyncWith(peer_id));
                        }
                    }
                }
            }
            BehaviourEvent::Ping(event) => {
                self.metrics.libp2p.record(&event);
                // libp2p leaves a connection open when pings fail; a connection that cannot
                // carry a ping within its timeout cannot carry gossip either.
                if let Err(ping::Failure::Timeout) = event.result {
                    info!(peer = %event.peer, "ping timed out: closing the connection to dial afresh");
                    self.metrics.stalled_connections.inc();
                    self.swarm.close_connection(event.connection);
                }
            }
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { old, new }) => {
                info!(?old, ?new, "reachability changed");
                self.nat_status = match new {
                    autonat::NatStatus::Public(_) => "public",
                    autonat::NatStatus::Private => "private",
                    autonat::NatStatus::Unknown => "unknown",
                }
                .to_owned();
                if self.nat_status == "private" {
                    self.listen_on_relays();
                }
            }
            BehaviourEvent::Autonat(_) => {}
            BehaviourEvent::RelayClient(event) => {
                if let relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } = &event {
                    info!(relay = %relay_peer_id, "relay reservation accepted");
                    self.metrics.relay_reservations.inc();
                    self.addrs_dirty = true;
                } else {
                    debug!(?event, "relay client");
                }
            }
            BehaviourEvent::Dcutr(event) => {
                self.metrics.libp2p.record(&event);
                self.metrics.holepunch_attempts.inc();
                match &event.result {
                    Ok(_) => {
                        self.metrics.holepunch_successes.inc();
                        info!(peer = %event.remote_peer_id, "hole punch succeeded");
                        // The direct connection replaces the relayed ones: request-response
                        // would otherwise keep spreading requests over the relay's limited
                        // circuit (duration and bytes) until the relay cuts it.
                        let relayed: Vec<ConnectionId> = self
                            .connections
                            .get(&event.remote_peer_id)
                            .map(|c| {
                                c.iter()
                                    .filter(|(_, (_, r))| *r)
                                    .map(|(id, _)| *id)
                                    .collect()
                            })
                            .unwrap_or_default();
                        for id in relayed {
                            self.swarm.close_connection(id);
                        }
                    }
                    Err(e) => info!(peer = %event.remote_peer_id, "hole punch failed: {e}"),
                }
            }
            BehaviourEvent::RelayServer(event) => self.metrics.libp2p.record(&event),
        }
    }

    /// Counts a timed-out request; closes the peer's connections once they look stalled.
    fn on_request_timeout(&mut self, peer: PeerId) {
        if !self.connections.contains_key(&peer) {
            return;
        }
        let count = self.timeouts_in_a_row.entry(peer).or_default();
        *count += 1;
        if *count >= STALLED_AFTER_TIMEOUTS {
            self.timeouts_in_a_row.remove(&peer);
            self.metrics.stalled_connections.inc();
            info!(%peer, "connection stalled ({STALLED_AFTER_TIMEOUTS} requests timed out in a row): closing it to dial afresh");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn discovered(&mut self, peer: PeerId) {
        if peer != self.local && !self.is_banned(&peer) {
            self.feed(Input::PeerDiscovered(peer));
        }
    }

    /// A request from `peer` (over a substream or a link): to the engine, which answers at
    /// once; refused when the peer is banned or too many requests await answers.
    fn on_request(&mut self, peer: PeerId, request: gossip::Request, reply: Reply) {
        if self.is_banned(&peer) {
            self.reply(reply, Response::Refused("penalised".to_owned()));
            return;
        }
        if self.inbound.len() >= MAX_INBOUND {
            self.reply(reply, Response::Refused("busy".to_owned()));
            return;
        }
        let id = self.next_channel;
        self.next_channel += 1;
        self.inbound.insert(id, reply);
        self.feed(Input::Request {
            from: peer,
            channel: id,
            request,
        });
        // The engine answers synchronously; never keep a channel it did not use.
        if let Some(reply) = self.inbound.remove(&id) {
            self.reply(reply, Response::Refused("no answer".to_owned()));
        }
    }

    fn reply(&mut self, reply: Reply, response: Response) {
        match reply {
            Reply::Substream(channel) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            Reply::Link { link, id } => {
                // A full queue drops the answer: the requester times out and reconciles later.
                if let Some(l) = self.links_in.get(&link) {
                    let _ = l.responses.try_send((id, response));
                }
            }
            Reply::None => {}
        }
    }

    /// Sends a one-way request ([`Output::Notify`]) to `to` over an open connection: on our
    /// link (the frame's id [`link::ONE_WAY`] tells the peer not to answer; an older peer's
    /// answer matches no request) or, without one, over request-response with its answer
    /// dropped. Not sent when `to` is not connected or banned, or every slot is taken: the
    /// engine leaves the rest to the rounds.
    fn notify(&mut self, to: PeerId, request: gossip::Request) {
        if self.is_banned(&to) || !self.swarm.is_connected(&to) {
            return;
        }
        let Err(request) = self.queue_on_link(to, link::ONE_WAY, request) else {
            return;
        };
        if self.outbound.len() < MAX_OUTBOUND {
            let id = self.swarm.behaviour_mut().sync.send_request(&to, request);
            self.outbound.insert(id, None);
        }
    }

    /// Whether `to` is connected other than through a relay.
    fn is_direct(&self, to: &PeerId) -> bool {
        self.connections
            .get(to)
            .is_some_and(|conns| conns.values().any(|(_, relayed)| !relayed))
    }

    // ---- links ------------------------------------------------------------------------

    /// Accepts the links peers open, handing them to the event loop.
    fn accept_links(&mut self) -> Result<(), StartError> {
        let mut incoming = self
            .link_control
            .accept(link::LINK_PROTOCOL)
            .map_err(|e| StartError::Transport(e.to_string()))?;
        let events = self.link_cx.events.clone();
        let task = tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                if events
                    .send(LinkEvent::Incoming { peer, stream })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        self._accept_links = Some(TaskGuard(task));
        Ok(())
    }

    /// Sends `request` on our link to `to` (opened now if need be) when `to` has a direct
    /// connection and the link has room; gives the request back otherwise.
    fn send_on_link(
        &mut self,
        to: PeerId,
        exchange: ExchangeId,
        request: gossip::Request,
    ) -> Result<(), gossip::Request> {
        if self.link_requests.len() >= MAX_OUTBOUND {
            return Err(request);
        }
        let id = self.next_link_request;
        let link = self.queue_on_link(to, id, request)?;
        self.next_link_request += 1;
        let sent = LinkRequest {
            exchange,
            peer: to,
            sent: Instant::now(),
        };
        self.link_requests.insert((link, id), sent);
        Ok(())
    }

    /// Queues request `id` on our link to `to` (opened now if need be) and returns the link;
    /// gives the request back when `to` has no direct connection, no link can be opened, or
    /// its queue is full.
    fn queue_on_link(
        &mut self,
        to: PeerId,
        id: u64,
        request: gossip::Request,
    ) -> Result<LinkId, gossip::Request> {
        if !self.is_direct(&to) || !self.open_link(to) {
            return Err(request);
        }
        let Some(out) = self.links_out.get_mut(&to) else {
            return Err(request);
        };
        match out.requests.try_send((id, request)) {
            Ok(()) => {
                out.last_used = Instant::now();
                Ok(out.id)
            }
            Err(e) => Err(e.into_inner().1),
        }
    }

    /// Opens our link to `to` unless it is open (or opening) already; false when there is
    /// none and cannot be one (the peer does not speak the link protocol, or `MAX_LINKS` are
    /// open).
    fn open_link(&mut self, to: PeerId) -> bool {
        if self.links_out.contains_key(&to) {
            return true;
        }
        if self.no_link.contains(&to) || self.links_out.len() >= link::MAX_LINKS {
            return false;
        }
        let (tx, rx) = mpsc::channel(link::LINK_QUEUE);
        let id = self.next_link;
        self.next_link += 1;
        link::spawn_outbound(
            self.link_control.clone(),
            to,
            id,
            self.config.request_timeout,
            rx,
            self.link_cx.clone(),
        );
        let out = OutLink {
            id,
            requests: tx,
            last_used: Instant::now(),
        };
        self.links_out.insert(to, out);
        true
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Incoming { peer, stream } => {
                let replaces = self.link_in_by_peer.remove(&peer);
                if let Some(old) = replaces {
                    // The peer opened a new link: the old one ends (its sender is dropped).
                    self.links_in.remove(&old);
                }
                if self.is_banned(&peer) || self.links_in.len() >= link::MAX_LINKS {
                    return; // Dropping the stream closes it.
                }
                let (tx, rx) = mpsc::channel(link::LINK_QUEUE);
                let id = self.next_link;
                self.next_link += 1;
                link::spawn_inbound(stream, peer, id, rx, self.link_cx.clone());
                self.links_in.insert(id, InLink { responses: tx });
                self.link_in_by_peer.insert(peer, id);
            }
            LinkEvent::Request {
                peer,
                link,
                id,
                request,
            } => {
                if self.links_in.contains_key(&link) {
                    let reply = if id == link::ONE_WAY {
                        Reply::None
                    } else {
                        Reply::Link { link, id }
                    };
                    self.on_request(peer, request, reply);
                }
            }
            LinkEvent::Response {
                peer,
                link,
                id,
                response,
            } => {
                if let Some(sent) = self.link_requests.remove(&(link, id)) {
                    self.timeouts_in_a_row.remove(&peer);
                    self.feed(Input::Response {
                        exchange: sent.exchange,
                        response,
                    });
                }
            }
            LinkEvent::Closed {
                peer,
                link,
                unsupported,
            } => {
                if unsupported && self.no_link.len() < MAX_TRACKED_PEERS {
                    self.no_link.insert(peer);
                }
                if self.links_out.get(&peer).is_some_and(|l| l.id == link) {
                    self.links_out.remove(&peer);
                }
                if self.links_in.remove(&link).is_some()
                    && self.link_in_by_peer.get(&peer) == Some(&link)
                {
                    self.link_in_by_peer.remove(&peer);
                }
                let lost: Vec<(LinkId, u64)> = self
                    .link_requests
                    .keys()
                    .filter(|(l, _)| *l == link)
                    .copied()
                    .collect();
                for key in lost {
                    if let Some(sent) = self.link_requests.remove(&key) {
                        self.feed(Input::Failed {
                            exchange: sent.exchange,
                        });
                    }
                }
            }
        }
    }

    /// On every round: requests on links unanswered for the request timeout fail (as over
    /// request-response), and our links with nothing in flight for the connection idle
    /// timeout close, so that idle connections can close too; but not the links to the
    /// overlay (the peers news goes to), which stay ready for news: after a quiet minute,
    /// opening them again at the first news (a stream and its protocol negotiation on every
    /// node at once) made that news take 3.2–3.3 s to reach 1,000 nodes in one process, not
    /// 1.3 s.
    fn tend_links(&mut self) {
        let timeout = self.config.request_timeout;
        let expired: Vec<(LinkId, u64)> = self
            .link_requests
            .iter()
            .filter(|(_, r)| r.sent.elapsed() >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(sent) = self.link_requests.remove(&key) {
                self.feed(Input::Failed {
                    exchange: sent.exchange,
                });
                self.on_request_timeout(sent.peer);
            }
        }
        let busy: HashSet<LinkId> = self.link_requests.keys().map(|(l, _)| *l).collect();
        let idle = self.config.idle_timeout;
        let overlay = self.engine.overlay();
        self.links_out.retain(|peer, l| {
            busy.contains(&l.id) || l.last_used.elapsed() < idle || overlay.contains(peer)
        });
    }

    fn on_sync_event(&mut self, event: request_response::Event<gossip::Request, gossip::Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_request(peer, request, Reply::Substream(channel)),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.timeouts_in_a_row.remove(&peer);
                    if let Some(Some(exchange)) = self.outbound.remove(&request_id) {
                        self.feed(Input::Response { exchange, response });
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, "sync request failed: {error}");
                if let Some(Some(exchange)) = self.outbound.remove(&request_id) {
                    self.feed(Input::Failed { exchange });
                }
                if matches!(error, request_response::OutboundFailure::Timeout) {
                    self.on_request_timeout(peer);
                }
                let unsupported = matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                );
                let unreachable = matches!(error, request_response::OutboundFailure::DialFailure);
                if (unsupported || unreachable) && !self.engine.store().nodes().contains(&peer) {
                    self.feed(Input::PeerGone(peer));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound sync request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

fn record_view(record: &Record) -> RecordView {
    let body = record.body();
    let (capabilities, endpoint, meta) = match &body.content {
        Content::Specialist(s) => (
            s.capabilities.clone(),
            s.endpoint.clone(),
            s.meta.iter().cloned().collect(),
        ),
        Content::Node(_) => (Vec::new(), None, BTreeMap::new()),
    };
    RecordView {
        owner: body.owner.to_string(),
        name: body.name.clone(),
        capabilities,
        endpoint,
        meta,
        seq: body.seq,
        issued_at: body.issued_at,
        expires_at: body.expires_at,
        id: record.id().to_hex(),
    }
}

fn rejection_error(reason: Rejection) -> NodeError {
    let field = match reason {
        Rejection::BadName => "name",
        Rejection::TooManyCapabilities | Rejection::BadCapability => "capabilities",
        Rejection::BadEndpoint => "endpoint",
        Rejection::MetaTooLarge | Rejection::BadMeta => "meta",
        Rejection::BadTimes | Rejection::TooFarFuture | Rejection::Expired => "ttl_secs",
        _ => "body",
    };
    NodeError::Invalid {
        field,
        message: reason.to_string(),
    }
}

/// The peer id an address ends with (`/p2p/<id>`).
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

fn relay_peer_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => last = Some(peer),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
