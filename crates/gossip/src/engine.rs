//! The sans-IO gossip engine: `handle(input, now) -> outputs`.
//!
//! Every round ([`Input::Tick`]) the engine picks `fanout` peers uniformly at random from the
//! members it knows (the owners of live node records in its store, plus peers its caller
//! reported) and starts a push-pull exchange with each:
//!
//! 1. `Summary` → `InSync` (equal sets: done, ~30 bytes each way) or `Differ`;
//! 2. `Reconcile` steps (Negentropy) until both sides know which ids the other lacks, carrying
//!    the records the other side lacks and the ids this side wants, each message under the
//!    byte limit; what does not fit goes in the next step, so nothing is dropped.
//!
//! When a record new to this node is merged (a new key or a newer seq), it is pushed on at once
//! to `push_fanout` peers (one way over an open connection, unless feedback is on) and its id
//! announced (one way) to ⌈ln N⌉ + 3 more, never to a peer known to hold it, who fetch it if
//! they lack it (rumor mongering: each node forwards a given record once, so the federation
//! does not amplify it; with feedback on, a push acknowledged as news goes on to one more
//! peer, a bounded number of times). A new record this node publishes is pushed to all of
//! those peers and to every connected member, since none of them can hold it yet; news that
//! came from its owner goes on as ids only. Refreshes and membership news (node records) learnt
//! from peers go on together at the next round: they are not what anyone waits for, and one
//! rumor wave each would cost a federation of N nodes N² messages as it forms. The periodic
//! exchanges remain what guarantees convergence.
//!
//! The caller owns the transport: it delivers requests, responses and failures, and sends what
//! the engine emits. Time and randomness come from the caller (`now`, the seed), so a run is
//! reproducible.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use directory::{Limits, PeerId, RawRecord, Record, RecordId, Rejection, Snapshot, Store};
use indexmap::IndexSet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_bytes::ByteBuf;

use crate::clock::{ClockConfig, NetworkClock};
use crate::wire::{
    ID_BYTES, ID_PREFIX_LEN, MAX_MESSAGE_BYTES, MESSAGE_OVERHEAD, PREFIX_BYTES, RECORD_OVERHEAD,
    Request, Response,
};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Exchanges started per round.
    pub fanout: usize,
    /// Peers a new record is pushed to at once (0 turns rumor mongering off, announcements
    /// included).
    pub push_fanout: usize,
    /// Feedback: each push acknowledged as news goes on to one more peer, at most this many
    /// times per initial push (0: plain forward-once pushes).
    pub push_feedback_forwards: u32,
    /// Further peers that get only the ids of news (lazy push, [`Request::Have`]) and fetch
    /// what they lack: reaches the nodes forward-once pushes miss for ~40 bytes a peer.
    /// `None`: ⌈ln N⌉ + 3 for N known members, so that every node is announced to
    /// `push_fanout + ⌈ln N⌉ + 3` times per news on average and one is missed with
    /// probability about e⁻³/N; `Some(0)` turns announcements off.
    pub announce_fanout: Option<usize>,
    /// Hard limit on one encoded message, both directions.
    pub max_message_bytes: usize,
    /// An exchange whose current step has no answer for this long is abandoned.
    pub exchange_timeout_ms: u64,
    /// Most request/response round trips in one exchange; the rest waits for the next round.
    pub max_round_trips: u32,
    /// Most full exchanges (periodic reconciliations) in flight at once.
    pub max_exchanges: usize,
    /// Most rumor exchanges (pushes that await an answer and fetches of announced ids; id
    /// announcements and pushes over open connections without feedback are one way,
    /// [`Output::Notify`]) in flight at once. Counted apart from `max_exchanges`: a few
    /// news items at once (node records being refreshed) must not leave the next one unsent
    /// while reconciliations are running.
    pub max_rumor_exchanges: usize,
    /// Most peers the caller may report (beyond node records).
    pub max_peers: usize,
    /// Most records remembered as already pushed on (deduplication of rumors).
    pub max_rumor_memory: usize,
    /// Records one peer may hand us per round (requests, responses and pushes together);
    /// the rest is not even decoded this round and arrives through a later exchange.
    pub max_records_per_peer_per_round: usize,
    /// Records all peers together may hand us per round.
    pub max_records_per_round: usize,
    /// Rumors of one owner pushed on per second, sustained: an owner that emits records
    /// faster is not amplified (its records still spread by reconciliation).
    pub rumor_rate_per_owner: f64,
    /// Burst of rumors allowed per owner (one owner holds at most 64 records by default).
    pub rumor_burst_per_owner: f64,
    /// Partial view: the rounds' exchanges, pushes and announcements go to at most this many
    /// members, a random subset that stays the same as the membership
    /// grows, so a node keeps a bounded set of connections however large the federation is.
    /// 0: every member, uniformly (the founding design; ~N connections per node).
    pub view_size: usize,
    /// With a view: on average once every this many rounds, one exchange goes to a uniformly
    /// random member instead (keeps the overlay mixing and a captured view repairable; 0 =
    /// never).
    pub view_rotation_rounds: u32,
    /// With a view: a member whose exchange failed is left out of it for this many rounds
    /// (the next member in this node's order takes its place).
    pub view_suspect_rounds: u64,
    /// Push on (rumor) refreshes merged from peers: records that only extend the life of the
    /// held version. On, they are not news to hurry with: the refreshes a node learns between
    /// two rounds go on together at the next round, one push and ~ln N + 3 announcements per
    /// round however many there were (the bytes stay near the minimum, the messages do not
    /// grow with N, and a burst of them does not hold up the news it would otherwise crowd);
    /// off, the owner's own pushes and then the rounds' reconciliations carry them, long
    /// before the version they replace expires (fewer messages, more bytes in the
    /// Negentropy steps).
    pub forward_refreshes: bool,
    /// Record and store bounds.
    pub limits: Limits,
    /// Network-adjusted time (clock-skew correction).
    pub clock: ClockConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            fanout: 2,
            push_fanout: 1,
            push_feedback_forwards: 0,
            announce_fanout: None,
            max_message_bytes: MAX_MESSAGE_BYTES,
            exchange_timeout_ms: 10_000,
            max_round_trips: 32,
            max_exchanges: 16,
            max_rumor_exchanges: 128,
            max_peers: 4096,
            max_rumor_memory: 65_536,
            max_records_per_peer_per_round: 20_000,
            max_records_per_round: 50_000,
            rumor_rate_per_owner: 1.0,
            rumor_burst_per_owner: 64.0,
            view_size: 0,
            view_rotation_rounds: 8,
            view_suspect_rounds: 16,
            forward_refreshes: true,
            limits: Limits::default(),
            clock: ClockConfig::default(),
        }
    }
}

/// Most ids of one announcement looked at (a full message of records has fewer).
const MAX_ANNOUNCED_IDS: usize = 1024;

/// An announced or wanted id is a whole record id (32 bytes) or its prefix.
fn is_id_or_prefix(id: &[u8]) -> bool {
    id.len() == 32 || id.len() == ID_PREFIX_LEN
}

/// Identifies an outbound exchange for the caller.
pub type ExchangeId = u64;

/// Identifies an inbound request whose response the caller must send.
pub type ChannelId = u64;

/// What the caller feeds the engine.
#[derive(Debug)]
pub enum Input {
    /// A round: expire records, abandon stale exchanges, start `fanout` exchanges.
    Tick,
    /// A record made by this node (its node record, a specialist, a withdrawal).
    Publish(Record),
    /// A peer the caller learnt of (bootstrap, mDNS, Kademlia), to gossip with.
    PeerDiscovered(PeerId),
    /// A peer to forget (unless it has a live node record).
    PeerGone(PeerId),
    /// The transport holds an open connection to this peer: pushes and announcements go to
    /// connected members first (no dial on the hot path of news).
    Connected(PeerId),
    /// The transport's last connection to this peer closed.
    Disconnected(PeerId),
    /// Start an exchange with this peer now (a bootstrap peer, a new connection).
    SyncWith(PeerId),
    /// A request from `from`; the engine answers with [`Output::Respond`] on `channel`.
    Request {
        from: PeerId,
        channel: ChannelId,
        request: Request,
    },
    /// The response to an exchange's last request.
    Response {
        exchange: ExchangeId,
        response: Response,
    },
    /// The exchange's last request failed (dial failure, timeout, stream error).
    Failed { exchange: ExchangeId },
}

/// What the engine asks its caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `request` to `to`, and report its response or failure with `exchange`.
    Send {
        to: PeerId,
        exchange: ExchangeId,
        request: Request,
    },
    /// Send `request` to `to` and expect nothing back (an id announcement, whose receiver
    /// fetches what it lacks, or a push without feedback): no exchange to report, and an
    /// answer, if the transport brings one, means nothing. The caller may drop it when it
    /// cannot be sent at once.
    Notify { to: PeerId, request: Request },
    /// Answer the request received on `channel`.
    Respond {
        channel: ChannelId,
        response: Response,
    },
    /// `peer` sent a record that breaks the protocol (forged, malformed, out of bounds).
    Misbehaved { peer: PeerId, reason: Rejection },
    /// Records this input merged into the store (new keys, newer versions, withdrawals; this
    /// node's own included), in merge order: a change feed for whoever watches the directory.
    /// Last of the input's outputs; absent when nothing was merged.
    Merged(Vec<Arc<Record>>),
}

/// Counters, for metrics and the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub rounds: u64,
    pub exchanges_started: u64,
    pub exchanges_completed: u64,
    pub exchanges_failed: u64,
    pub exchanges_in_sync: u64,
    pub round_trips: u64,
    /// Records received in requests and responses (pushes included).
    pub records_received: u64,
    /// Received records that were new to this node.
    pub records_merged: u64,
    pub records_sent: u64,
    pub pushes_sent: u64,
    /// Records left unread because a per-round cap was reached (they come back later).
    pub records_deferred: u64,
    /// News not pushed on because its owner exceeded its rumor rate.
    pub rumors_suppressed: u64,
    /// Refreshes merged from peers and left to the reconciliations rather than pushed on
    /// ([`Config::forward_refreshes`] off), and records of the round's batch beyond
    /// `max_rumor_memory`.
    pub refreshes_not_forwarded: u64,
    /// Id announcements sent (lazy pushes).
    pub announces_sent: u64,
    /// Announced ids this node lacked and fetched.
    pub announced_fetched: u64,
}

#[derive(Debug, Clone)]
enum Exchange {
    Sync(SyncState),
    /// A rumor push: the batch, and how many more peers it may go to while it is news.
    Push(Arc<Vec<RawRecord>>, u32),
}

impl Exchange {
    /// Pushes and fetches of announced ids (a sync without a snapshot), as opposed to full
    /// reconciliations.
    fn is_rumor(&self) -> bool {
        match self {
            Exchange::Sync(state) => state.snapshot.is_none(),
            Exchange::Push(..) => true,
        }
    }
}

#[derive(Debug, Clone)]
struct SyncState {
    peer: PeerId,
    round_trips: u32,
    /// The Negentropy snapshot of a full exchange; `None` for a fetch of announced ids.
    snapshot: Option<Arc<Snapshot>>,
    /// Ids this side holds and the peer lacks, not yet sent.
    have: VecDeque<RecordId>,
    /// Ids the peer holds and this side lacks, not yet asked for.
    need: VecDeque<Want>,
    /// Ids asked for in the last request, in order.
    asked: Vec<Want>,
}

/// A record asked for in a `Reconcile` request: by its id (reconciliation), or by the prefix
/// of its id under which a peer announced it (a fetch of announced news).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Id(RecordId),
    Prefix(IdPrefix),
}

impl Want {
    fn to_wire(self) -> ByteBuf {
        match self {
            Want::Id(id) => ByteBuf::from(id.0.to_vec()),
            Want::Prefix(p) => ByteBuf::from(p.to_vec()),
        }
    }

    fn wire_len(self) -> usize {
        match self {
            Want::Id(_) => ID_BYTES,
            Want::Prefix(_) => PREFIX_BYTES,
        }
    }
}

/// The first [`ID_PREFIX_LEN`] bytes of a record id: how news is announced (`Have`) and
/// fetched. Two records sharing a prefix (about 2⁻⁶⁴ for a pair) can only make a node skip
/// or miss one announcement, which reconciliation repairs: every record is still checked by
/// its signature and merged by its full id.
type IdPrefix = [u8; ID_PREFIX_LEN];

fn prefix_of(id: &RecordId) -> IdPrefix {
    let mut p = [0; ID_PREFIX_LEN];
    p.copy_from_slice(&id.0[..ID_PREFIX_LEN]);
    p
}

#[derive(Debug, Clone)]
struct Pending {
    peer: PeerId,
    /// When this step's request was sent.
    started_at: u64,
    kind: Exchange,
}

/// The engine of one node.
#[derive(Debug, Clone)]
pub struct Engine {
    local: PeerId,
    config: Config,
    rng: ChaCha8Rng,
    store: Store,
    snapshot: Option<Arc<Snapshot>>,
    peers: IndexSet<PeerId>,
    /// Peers the transport is connected to (bounded by `max_peers`).
    connected: IndexSet<PeerId>,
    pending: HashMap<ExchangeId, Pending>,
    next_exchange: ExchangeId,
    /// Records new to this node, to push on at the end of the current input, where they
    /// came from, and the peer that sent them (none: this node's own or the round's).
    news: Vec<(Arc<Record>, Source, Option<PeerId>)>,
    /// Refreshes (see [`Config::forward_refreshes`]) and node records merged from peers since
    /// the last round, pushed on together at the next one (bounded by `max_rumor_memory`).
    next_round: Vec<Arc<Record>>,
    /// Records merged during the current input, reported with [`Output::Merged`].
    merged: Vec<Arc<Record>>,
    /// Ids of the records merged recently (this node's own included), oldest first (bounded).
    rumored: VecDeque<RecordId>,
    /// The same ids by prefix: tells which announced prefixes this node already has (also
    /// those waiting for the next round's batch, which it must not fetch again), and finds
    /// the record a peer fetches by the prefix this node announced.
    rumored_by_prefix: HashMap<IdPrefix, RecordId>,
    /// Prefixes of announced ids being fetched, when the fetch started and who announced
    /// them (bounded; entries older than the exchange timeout are stale).
    fetching: HashMap<IdPrefix, Fetch>,
    /// Records received per peer this round, and in all.
    received_this_round: HashMap<PeerId, usize>,
    received_total_this_round: usize,
    /// Rumor token buckets per owner: (tokens, last refill in unix ms).
    rumor_buckets: HashMap<PeerId, (f64, u64)>,
    /// Offset of this node's clock from its peers'; records are judged in network time.
    clock: NetworkClock,
    /// The partial view (see [`Config::view_size`]), when on.
    view: View,
    stats: EngineStats,
}

/// A partial view: the `view_size` members ranked first by a hash keyed with a secret of this
/// node (so no one can choose to be in it), skipping suspects.
#[derive(Debug, Clone, Default)]
struct View {
    salt: u64,
    members: Vec<PeerId>,
    /// Membership size and round the members were computed at; `None`: recompute.
    computed: Option<(usize, u64)>,
    /// Members left out until the given round, after a failed exchange (bounded).
    suspects: HashMap<PeerId, u64>,
    /// Members that have this node in their view: they started a reconciliation with it, at
    /// the given round (bounded by `2 * view_size`, forgotten after [`INBOUND_ROUNDS`]).
    /// News goes to them too, so that a node few views hold still hears of it at once.
    inbound: HashMap<PeerId, u64>,
}

/// An announced id being fetched.
#[derive(Debug, Clone)]
struct Fetch {
    started_at: u64,
    /// The peers that announced it, the one it is fetched from first (at most
    /// [`MAX_KNOWN_HOLDERS`]): they hold it, so it is not sent on to them.
    holders: Vec<PeerId>,
}

/// Announcers remembered per id being fetched: about the overlay a view makes (a view and
/// the views holding this node), and enough to spare most announcements a wave would send
/// back to where it came from.
const MAX_KNOWN_HOLDERS: usize = 16;

/// Rounds a member that reconciled with this node is still counted as holding it in its view
/// (with fanout 2 over a view of 8, one of them starts an exchange with each member about
/// every 4 rounds).
const INBOUND_ROUNDS: u64 = 16;

/// Where a record to push on came from; it decides how many peers get it eagerly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Published by this node: no one else can hold it yet, so every peer it goes to gets it
    /// whole, and it goes to every connected peer as well (gossipsub's flood publishing).
    Own,
    /// A refresh of this node's, or its node record: pushed whole, but to the usual number
    /// of peers (they recur every third of a lifetime; flooded, they would be most of the
    /// traffic of a federation where nothing changes).
    OwnRoutine,
    /// News merged from a peer: `push_fanout` peers get it, the rest its id.
    Peer,
    /// News merged from its owner: the owner pushed it whole to every peer it is connected
    /// to, so a copy pushed on would most often be one more of those; the ids only.
    Owner,
    /// The round's batch (refreshes, membership news): only ids. Most peers already hold
    /// most of it, and a whole batch pushed eagerly would mostly be copies they drop.
    Round,
}

/// A node record that is not a withdrawal: membership news, which waits for the next round
/// (a withdrawal says a node left, which its peers should stop counting on at once).
fn is_membership(record: &Record) -> bool {
    matches!(record.body().content, directory::Content::Node(_)) && !record.withdrawn()
}

/// Up to `k` of `from`, drawn uniformly without replacement.
fn take_random(rng: &mut ChaCha8Rng, mut from: Vec<PeerId>, k: usize) -> Vec<PeerId> {
    let mut picked = Vec::with_capacity(k.min(from.len()));
    while picked.len() < k && !from.is_empty() {
        let i = rng.gen_range(0..from.len());
        picked.push(from.swap_remove(i));
    }
    picked
}

/// Rounds after which the view is recomputed even if the membership size did not change (a
/// member left and another joined).
const VIEW_RECOMPUTE_ROUNDS: u64 = 8;

impl Engine {
    /// A new engine for node `local`, with randomness from `seed`.
    pub fn new(local: PeerId, config: Config, seed: u64) -> Self {
        let clock = NetworkClock::new(config.clock.clone());
        Self {
            local,
            store: Store::new(config.limits.clone()),
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            snapshot: None,
            peers: IndexSet::new(),
            connected: IndexSet::new(),
            pending: HashMap::new(),
            next_exchange: 0,
            news: Vec::new(),
            next_round: Vec::new(),
            merged: Vec::new(),
            rumored: VecDeque::new(),
            rumored_by_prefix: HashMap::new(),
            fetching: HashMap::new(),
            received_this_round: HashMap::new(),
            received_total_this_round: 0,
            rumor_buckets: HashMap::new(),
            clock,
            view: View {
                // From its own stream, so turning the view on or off changes no other draw.
                salt: {
                    let mut r = ChaCha8Rng::seed_from_u64(seed);
                    r.set_stream(1);
                    r.r#gen()
                },
                ..View::default()
            },
            stats: EngineStats::default(),
        }
    }

    pub fn local_peer(&self) -> PeerId {
        self.local
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
    /// The clock-skew estimate (offset from peers, samples).
    pub fn clock(&self) -> &NetworkClock {
        &self.clock
    }
    /// Local time `now` corrected by the offset from peers: the time records are issued,
    /// accepted and expired by.
    pub fn network_time(&self, now: u64) -> u64 {
        self.clock.network_time(now)
    }
    /// The time the store judges expiry by: the earlier of the local and network times, so
    /// that no clock correction (right or wrong) makes this node drop a live record early.
    pub fn store_time(&self, now: u64) -> u64 {
        now.min(self.network_time(now))
    }
    /// Peers reported by the caller.
    pub fn peers(&self) -> &IndexSet<PeerId> {
        &self.peers
    }
    /// The summary (count and fingerprint) of the store's reconciliation set, building the
    /// snapshot now if the store changed since the last one.
    pub fn summary(&mut self) -> directory::Summary {
        self.snapshot().summary()
    }

    /// Outbound exchanges in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Full exchanges in flight (those `max_exchanges` bounds).
    fn syncs_in_flight(&self) -> usize {
        self.pending.values().filter(|p| !p.kind.is_rumor()).count()
    }

    /// Whether another rumor exchange (push, fetch) may start now.
    fn rumor_room(&self) -> bool {
        let rumors = self.pending.values().filter(|p| p.kind.is_rumor()).count();
        rumors < self.config.max_rumor_exchanges
    }

    /// Feeds one input at time `now` (unix ms); returns what to do.
    pub fn handle(&mut self, input: Input, now: u64) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Tick => self.on_tick(now, &mut out),
            Input::SyncWith(peer) => {
                let busy = self
                    .pending
                    .values()
                    .any(|p| p.peer == peer && !p.kind.is_rumor());
                if peer != self.local && !busy && self.syncs_in_flight() < self.config.max_exchanges
                {
                    self.start_sync(peer, now, &mut out);
                }
            }
            Input::Publish(record) => {
                // Our own records go through the merge rule like any other.
                if let Ok(merged) = self.store.merge(record, self.store_time(now)) {
                    self.note_merged(&merged.record);
                    let source = if merged.refresh || is_membership(&merged.record) {
                        Source::OwnRoutine
                    } else {
                        Source::Own
                    };
                    self.news.push((merged.record, source, None));
                }
            }
            Input::PeerDiscovered(peer) => {
                if peer != self.local && self.peers.len() < self.config.max_peers {
                    self.peers.insert(peer);
                }
            }
            Input::PeerGone(peer) => {
                self.peers.swap_remove(&peer);
            }
            Input::Connected(peer) => {
                if peer != self.local && self.connected.len() < self.config.max_peers {
                    self.connected.insert(peer);
                }
            }
            Input::Disconnected(peer) => {
                self.connected.swap_remove(&peer);
            }
            Input::Request {
                from,
                channel,
                request,
            } => {
                let response = self.on_request(from, request, now, &mut out);
                out.push(Output::Respond { channel, response });
            }
            Input::Response { exchange, response } => {
                self.on_response(exchange, response, now, &mut out)
            }
            Input::Failed { exchange } => self.fail(exchange),
        }
        self.push_news(now, &mut out);
        if !self.merged.is_empty() {
            out.push(Output::Merged(std::mem::take(&mut self.merged)));
        }
        out
    }

    fn on_tick(&mut self, now: u64, out: &mut Vec<Output>) {
        self.stats.rounds += 1;
        self.clock.refresh(now);
        self.follow_clock();
        self.store.expire(self.store_time(now));
        // The round's batch goes on with the news of this input (`push_news`), less the
        // records replaced or expired since they were merged.
        let store = &self.store;
        self.news.extend(
            self.next_round
                .drain(..)
                .filter(|r| store.get(&r.key()).is_some_and(|held| held.id() == r.id()))
                .map(|r| (r, Source::Round, None)),
        );
        self.received_this_round.clear();
        self.received_total_this_round = 0;
        // Buckets that have refilled completely carry no information: forget them.
        let (rate, burst) = (
            self.config.rumor_rate_per_owner,
            self.config.rumor_burst_per_owner,
        );
        self.rumor_buckets.retain(|_, (tokens, at)| {
            *tokens + rate * now.saturating_sub(*at) as f64 / 1000.0 < burst
        });
        let timeout = self.config.exchange_timeout_ms;
        let timed_out: Vec<ExchangeId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.started_at) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in timed_out {
            self.fail(id);
        }

        // A round always gossips: when exchanges that will never be answered (lost messages,
        // stalled peers) fill every slot, the oldest are abandoned to make room.
        let wanted = self.config.fanout.min(self.config.max_exchanges);
        while self.syncs_in_flight() + wanted > self.config.max_exchanges {
            let Some(oldest) = self
                .pending
                .iter()
                .filter(|(_, p)| !p.kind.is_rumor())
                .min_by_key(|(id, p)| (p.started_at, **id))
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.pending.remove(&oldest);
            self.stats.exchanges_failed += 1;
        }
        let busy: HashSet<PeerId> = self
            .pending
            .values()
            .filter(|p| !p.kind.is_rumor())
            .map(|p| p.peer)
            .collect();
        let mut picked = self.pick_peers(wanted, &busy);
        let rotation = self.config.view_rotation_rounds;
        if !self.view.members.is_empty() && rotation > 0 && self.rng.gen_range(0..rotation) == 0 {
            let mut exclude = busy;
            exclude.extend(self.view.members.iter().copied());
            if let Some(outside) = self.pick_uniform(1, &exclude).pop() {
                picked.pop();
                picked.push(outside);
            }
        }
        for peer in picked {
            self.start_sync(peer, now, out);
        }
    }

    fn start_sync(&mut self, peer: PeerId, now: u64, out: &mut Vec<Output>) {
        let snapshot = self.snapshot();
        let summary = snapshot.summary();
        let request = Request::Summary(summary.count, ByteBuf::from(summary.fingerprint.to_vec()));
        let state = SyncState {
            peer,
            round_trips: 1,
            snapshot: Some(snapshot),
            have: VecDeque::new(),
            need: VecDeque::new(),
            asked: Vec::new(),
        };
        self.stats.exchanges_started += 1;
        self.start(peer, now, Exchange::Sync(state), request, out);
    }

    fn start(
        &mut self,
        peer: PeerId,
        now: u64,
        kind: Exchange,
        request: Request,
        out: &mut Vec<Output>,
    ) {
        let exchange = self.next_exchange;
        self.next_exchange += 1;
        self.pending.insert(
            exchange,
            Pending {
                peer,
                started_at: now,
                kind,
            },
        );
        self.stats.round_trips += 1;
        out.push(Output::Send {
            to: peer,
            exchange,
            request,
        });
    }

    /// Up to `k` distinct peers for exchanges and pushes, never this node and never one in
    /// `exclude`: uniformly from the view when there is one (and the membership is larger),
    /// else from every member.
    fn pick_peers(&mut self, k: usize, exclude: &HashSet<PeerId>) -> Vec<PeerId> {
        if !self.view_on() {
            return self.pick_uniform(k, exclude);
        }
        self.refresh_view();
        let candidates: Vec<PeerId> = self
            .view
            .members
            .iter()
            .filter(|p| !exclude.contains(p))
            .copied()
            .collect();
        take_random(&mut self.rng, candidates, k)
    }

    /// Whether picks go to the view: one is configured and the membership is larger.
    fn view_on(&self) -> bool {
        self.config.view_size > 0 && self.members() > self.config.view_size
    }

    /// Node-record owners and reported peers (a peer may be counted twice).
    fn members(&self) -> usize {
        self.store.nodes().len() + self.peers.len()
    }

    /// Recomputes the view when a member became suspect, every [`VIEW_RECOMPUTE_ROUNDS`]
    /// rounds, and when the membership size changed: at once while the view is not full,
    /// else once a round (ranking every member at each change took about a tenth of the CPU
    /// of 1,000 nodes forming a federation in one process).
    fn refresh_view(&mut self) {
        let members = self.members();
        let round = self.stats.rounds;
        if let Some((size, at)) = self.view.computed
            && round < at + VIEW_RECOMPUTE_ROUNDS
            && (size == members
                || (at == round && self.view.members.len() >= self.config.view_size))
        {
            return;
        }
        self.view.suspects.retain(|_, until| *until > round);
        let salt = self.view.salt;
        let rank = |p: &PeerId| {
            let mut h = std::hash::DefaultHasher::new();
            salt.hash(&mut h);
            p.hash(&mut h);
            h.finish()
        };
        let mut ranked: Vec<(u64, PeerId)> = self
            .store
            .nodes()
            .iter()
            .chain(self.peers.iter())
            .filter(|p| **p != self.local && !self.view.suspects.contains_key(p))
            .map(|p| (rank(p), *p))
            .collect();
        ranked.sort_unstable();
        ranked.dedup();
        ranked.truncate(self.config.view_size);
        self.view.members = ranked.into_iter().map(|(_, p)| p).collect();
        self.view.computed = Some((members, round));
    }

    /// A member started a reconciliation with this node: with a view, it is one of the
    /// members whose view holds this node (see `View::inbound`).
    fn note_inbound(&mut self, peer: PeerId) {
        if self.config.view_size == 0
            || !(self.store.nodes().contains(&peer) || self.peers.contains(&peer))
        {
            return;
        }
        let round = self.stats.rounds;
        let inbound = &mut self.view.inbound;
        inbound.retain(|_, at| round.saturating_sub(*at) < INBOUND_ROUNDS);
        if !inbound.contains_key(&peer)
            && inbound.len() >= 2 * self.config.view_size
            && let Some(oldest) = inbound.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p)
        {
            inbound.remove(&oldest);
        }
        inbound.insert(peer, round);
    }

    /// An exchange with `peer` failed: a member of the view is left out of it for a while.
    fn suspect(&mut self, peer: PeerId) {
        if self.config.view_size == 0 || !self.view.members.contains(&peer) {
            return;
        }
        if self.view.suspects.len() < 4 * self.config.view_size {
            let until = self.stats.rounds + self.config.view_suspect_rounds;
            self.view.suspects.insert(peer, until);
            self.view.computed = None;
        }
    }

    /// The members of the view (empty when there is none).
    pub fn view(&self) -> &[PeerId] {
        &self.view.members
    }

    /// With a view, the peers news goes to: its members and the members whose views hold
    /// this node (empty without a view, where news goes to whichever members are connected).
    pub fn overlay(&self) -> HashSet<PeerId> {
        if !self.view_on() {
            return HashSet::new();
        }
        (self.view.members.iter())
            .chain(self.inbound_members())
            .copied()
            .collect()
    }

    /// The members counted as holding this node in their views (see `View::inbound`).
    fn inbound_members(&self) -> impl Iterator<Item = &PeerId> {
        let round = self.stats.rounds;
        let inbound = self.view.inbound.iter();
        inbound
            .filter(move |(_, at)| round.saturating_sub(**at) < INBOUND_ROUNDS)
            .map(|(p, _)| p)
    }

    /// Whether a one-way request to `peer` goes over an open connection (a caller that
    /// reports no connections, the simulator, has every member count as connected).
    fn is_open(&self, peer: &PeerId) -> bool {
        self.connected.is_empty() || self.connected.contains(peer)
    }

    /// Up to `k` distinct peers, uniformly from node-record owners and reported peers,
    /// never this node and never one in `exclude`.
    fn pick_uniform(&mut self, k: usize, exclude: &HashSet<PeerId>) -> Vec<PeerId> {
        let nodes = self.store.nodes();
        let total = nodes.len() + self.peers.len();
        let mut picked: Vec<PeerId> = Vec::with_capacity(k);
        if total == 0 || k == 0 {
            return picked;
        }
        // Rejection sampling: cheap when k is small against the membership, bounded otherwise.
        let mut attempts = 0;
        while picked.len() < k && attempts < 8 * k + 32 {
            attempts += 1;
            let i = self.rng.gen_range(0..total);
            let candidate = if i < nodes.len() {
                nodes[i]
            } else {
                self.peers[i - nodes.len()]
            };
            if candidate != self.local
                && !exclude.contains(&candidate)
                && !picked.contains(&candidate)
            {
                picked.push(candidate);
            }
        }
        if picked.len() < k {
            // Small membership: fall back to an exhaustive shuffle of what is left.
            let mut rest: Vec<PeerId> = nodes
                .iter()
                .chain(self.peers.iter())
                .filter(|p| **p != self.local && !exclude.contains(p) && !picked.contains(p))
                .copied()
                .collect::<IndexSet<_>>()
                .into_iter()
                .collect();
            while picked.len() < k && !rest.is_empty() {
                let i = self.rng.gen_range(0..rest.len());
                picked.push(rest.swap_remove(i));
            }
        }
        picked
    }

    /// The reconciliation snapshot of the store, rebuilt only when the store changed.
    fn snapshot(&mut self) -> Arc<Snapshot> {
        match &self.snapshot {
            Some(s) if s.version() == self.store.version() => s.clone(),
            _ => {
                let built = Arc::new(Snapshot::build(&self.store));
                self.snapshot = Some(built.clone());
                built
            }
        }
    }

    fn on_request(
        &mut self,
        from: PeerId,
        request: Request,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Response {
        match request {
            Request::Summary(count, fingerprint) => {
                self.note_inbound(from);
                let time = self.network_time(now);
                self.store.expire(self.store_time(now));
                let summary = self.snapshot().summary();
                if summary.count == count && summary.fingerprint[..] == fingerprint[..] {
                    Response::InSync(time)
                } else {
                    Response::Differ(time)
                }
            }
            Request::Reconcile(negentropy, records, wants) => {
                if let Some(bad) = wants.iter().find(|w| !is_id_or_prefix(w)) {
                    return Response::Refused(format!(
                        "wanted id of {} bytes: expected {ID_PREFIX_LEN} (prefix) or 32",
                        bad.len()
                    ));
                }
                self.merge_all(from, records, now, out);
                let mut budget = self
                    .config
                    .max_message_bytes
                    .saturating_sub(MESSAGE_OVERHEAD);
                let answer = match negentropy {
                    Some(query) => match self.snapshot().respond(&query) {
                        Ok(answer) => Some(answer),
                        Err(e) => return Response::Refused(e.to_string()),
                    },
                    None => None,
                };
                budget = budget.saturating_sub(answer.as_ref().map_or(0, |a| a.len() + 8));
                let mut found = Vec::new();
                let mut processed = 0u32;
                for want in &wants {
                    if let Some(record) = self.lookup_want(want) {
                        let size = record.wire_len() + RECORD_OVERHEAD;
                        if size > budget {
                            break;
                        }
                        budget -= size;
                        found.push(record.to_raw());
                    }
                    processed += 1;
                }
                self.stats.records_sent += found.len() as u64;
                Response::Reconcile(answer.map(ByteBuf::from), found, processed)
            }
            Request::Push(records) => {
                let merged = self.merge_all(from, records, now, out);
                Response::PushAck(merged as u32)
            }
            Request::Have(ids) => {
                if let Some(bad) = ids.iter().find(|id| !is_id_or_prefix(id)) {
                    return Response::Refused(format!(
                        "announced id of {} bytes: expected {ID_PREFIX_LEN} (prefix) or 32",
                        bad.len()
                    ));
                }
                Response::PushAck(self.fetch_announced(from, &ids, now, out))
            }
        }
    }

    /// The record a peer asks for: by its id, or by the prefix this node announced it under
    /// (a rumor it pushed on recently; none if it has been replaced or expired since).
    fn lookup_want(&self, want: &[u8]) -> Option<&Arc<Record>> {
        if let Ok(id) = <[u8; 32]>::try_from(want) {
            return self.store.get_by_id(&RecordId(id));
        }
        let prefix = IdPrefix::try_from(want).ok()?;
        let id = self.rumored_by_prefix.get(&prefix)?;
        self.store.get_by_id(id)
    }

    fn on_response(
        &mut self,
        exchange: ExchangeId,
        response: Response,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        let Some(pending) = self.pending.remove(&exchange) else {
            return; // Late answer to an abandoned exchange.
        };
        let peer = pending.peer;
        let mut state = match (pending.kind, response) {
            (Exchange::Push(batch, forwards), Response::PushAck(new)) => {
                // Feedback (Demers et al.): a rumor that was news to the peer is still hot,
                // so it goes on to one more peer; one that was not has done its work.
                if new > 0 && forwards > 0 {
                    let exclude = HashSet::from([peer]);
                    if let Some(next) = self.pick_peers(1, &exclude).pop() {
                        self.send_push(next, batch, forwards - 1, now, out);
                    }
                }
                return;
            }
            (Exchange::Push(..), _) => return,
            (Exchange::Sync(_), Response::InSync(time)) => {
                self.observe_clock(peer, time, pending.started_at, now);
                self.stats.exchanges_in_sync += 1;
                self.stats.exchanges_completed += 1;
                return;
            }
            (Exchange::Sync(state), Response::Differ(time)) => {
                self.observe_clock(peer, time, pending.started_at, now);
                let Some(Ok(first)) = state.snapshot.as_ref().map(|s| s.initiate()) else {
                    self.stats.exchanges_failed += 1;
                    return;
                };
                let request =
                    Request::Reconcile(Some(ByteBuf::from(first)), Vec::new(), Vec::new());
                self.continue_sync(state, request, now, out);
                return;
            }
            (Exchange::Sync(mut state), Response::Reconcile(answer, records, processed)) => {
                let processed = (processed as usize).min(state.asked.len());
                // Wants the peer had no room for go back to the front of the queue.
                for want in state.asked.drain(processed..).rev() {
                    state.need.push_front(want);
                }
                state.asked.clear();
                self.merge_all(peer, records, now, out);
                match answer {
                    Some(answer) => match state.snapshot.as_ref().map(|s| s.step(&answer)) {
                        Some(Ok(step)) => {
                            state.have.extend(step.have);
                            self.most_useful_first(&mut state.have);
                            state.need.extend(step.need.into_iter().map(Want::Id));
                            self.next_step(state, step.next, now, out);
                        }
                        _ => {
                            self.stats.exchanges_failed += 1;
                        }
                    },
                    None => self.next_step(state, None, now, out),
                }
                return;
            }
            (Exchange::Sync(state), _) => state,
        };
        // Refused, or an answer that does not fit the request.
        state.have.clear();
        self.stats.exchanges_failed += 1;
        self.forget_fetch(&Exchange::Sync(state));
    }

    /// An exchange whose request failed or timed out: its peer is suspected (with a view) and
    /// a fetch's ids are released.
    fn fail(&mut self, exchange: ExchangeId) {
        if let Some(failed) = self.pending.remove(&exchange) {
            self.stats.exchanges_failed += 1;
            self.forget_fetch(&failed.kind);
            self.suspect(failed.peer);
        }
    }

    /// A fetch of announced ids that failed no longer stands in the way of fetching them
    /// from the next peer that announces them (rather than waiting for the exchange timeout
    /// or a round's reconciliation).
    fn forget_fetch(&mut self, kind: &Exchange) {
        let Exchange::Sync(state) = kind else {
            return;
        };
        if state.snapshot.is_some() {
            return;
        }
        for want in state.asked.iter().chain(&state.need) {
            let prefix = match *want {
                Want::Id(id) => prefix_of(&id),
                Want::Prefix(prefix) => prefix,
            };
            self.fetching.remove(&prefix);
        }
    }

    /// Takes a clock sample from an answer and lets the store follow the correction.
    fn observe_clock(&mut self, peer: PeerId, time: u64, sent_at: u64, now: u64) {
        self.clock.observe(peer, time, sent_at, now);
        self.follow_clock();
    }

    /// Widens the store's far-future horizon by the current clock correction.
    fn follow_clock(&mut self) {
        self.store
            .set_clock_correction(self.clock.offset_ms().unsigned_abs());
    }

    /// Orders records to send so that, when a delta spans several messages, the most useful
    /// go first: node records (membership, addresses), then the newest.
    fn most_useful_first(&self, ids: &mut VecDeque<RecordId>) {
        let store = &self.store;
        ids.make_contiguous()
            .sort_by_cached_key(|id| match store.get_by_id(id) {
                Some(r) => (
                    !matches!(r.body().content, directory::Content::Node(_)),
                    std::cmp::Reverse(r.issued_at()),
                ),
                None => (true, std::cmp::Reverse(0)),
            });
    }

    /// Builds the next `Reconcile` request of an exchange, or ends it when nothing is left.
    fn next_step(
        &mut self,
        mut state: SyncState,
        negentropy: Option<Vec<u8>>,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        if negentropy.is_none() && state.have.is_empty() && state.need.is_empty() {
            self.stats.exchanges_completed += 1;
            return;
        }
        if state.round_trips >= self.config.max_round_trips {
            // The rest waits for a later round; nothing is lost, only delayed.
            self.stats.exchanges_completed += 1;
            return;
        }
        let mut budget = self
            .config
            .max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD);
        budget = budget.saturating_sub(negentropy.as_ref().map_or(0, |n| n.len() + 8));
        // Wants first: they are small, and asking early lets the answer carry them.
        let mut wants = Vec::new();
        while let Some(&want) = state.need.front() {
            if want.wire_len() > budget / 2 {
                break;
            }
            budget -= want.wire_len();
            wants.push(want.to_wire());
            state.asked.push(want);
            state.need.pop_front();
        }
        let mut push = Vec::new();
        while let Some(id) = state.have.front() {
            // A record expired or replaced since is simply not sent.
            if let Some(record) = self.store.get_by_id(id) {
                let size = record.wire_len() + RECORD_OVERHEAD;
                if size > budget {
                    break;
                }
                budget -= size;
                push.push(record.to_raw());
            }
            state.have.pop_front();
        }
        self.stats.records_sent += push.len() as u64;
        let request = Request::Reconcile(negentropy.map(ByteBuf::from), push, wants);
        self.continue_sync(state, request, now, out);
    }

    fn continue_sync(
        &mut self,
        mut state: SyncState,
        request: Request,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        state.round_trips += 1;
        let peer = state.peer;
        let exchange = self.next_exchange;
        self.next_exchange += 1;
        // Each step gets the whole timeout: on a slow or lossy path an exchange of several
        // round trips makes progress step by step instead of being abandoned as a whole
        // (`max_round_trips` bounds how long one exchange can last).
        self.pending.insert(
            exchange,
            Pending {
                peer,
                started_at: now,
                kind: Exchange::Sync(state),
            },
        );
        self.stats.round_trips += 1;
        out.push(Output::Send {
            to: peer,
            exchange,
            request,
        });
    }

    /// Checks and merges received records (signatures verified in one batch); returns how
    /// many were new.
    fn merge_all(
        &mut self,
        from: PeerId,
        records: Vec<RawRecord>,
        now: u64,
        out: &mut Vec<Output>,
    ) -> usize {
        let mut records = records;
        let used = self.received_this_round.get(&from).copied().unwrap_or(0);
        let allowed = self
            .config
            .max_records_per_peer_per_round
            .saturating_sub(used)
            .min(
                self.config
                    .max_records_per_round
                    .saturating_sub(self.received_total_this_round),
            );
        if records.len() > allowed {
            self.stats.records_deferred += (records.len() - allowed) as u64;
            records.truncate(allowed);
        }
        if records.is_empty() {
            return 0;
        }
        if !self.received_this_round.contains_key(&from)
            && self.received_this_round.len() >= self.config.max_peers
        {
            // Too many senders this round to account for: the records come back later.
            self.stats.records_deferred += records.len() as u64;
            return 0;
        }
        *self.received_this_round.entry(from).or_default() += records.len();
        self.received_total_this_round += records.len();
        self.stats.records_received += records.len() as u64;
        let mut decoded = Vec::with_capacity(records.len());
        for raw in records {
            match Record::from_raw(raw, &self.config.limits) {
                Ok(record) => decoded.push(record),
                Err(reason) => out.push(Output::Misbehaved { peer: from, reason }),
            }
        }
        let mut merged = 0;
        let time = self.store_time(now);
        for result in self.store.merge_batch(decoded, time) {
            match result {
                Ok(m) => {
                    merged += 1;
                    self.stats.records_merged += 1;
                    self.note_merged(&m.record);
                    if m.refresh && !self.config.forward_refreshes {
                        self.stats.refreshes_not_forwarded += 1;
                    } else if !m.refresh && !is_membership(&m.record) {
                        let source = if *m.record.owner() == from {
                            Source::Owner
                        } else {
                            Source::Peer
                        };
                        self.news.push((m.record, source, Some(from)));
                    } else if self.next_round.len() < self.config.max_rumor_memory {
                        self.next_round.push(m.record);
                    } else {
                        self.stats.refreshes_not_forwarded += 1;
                    }
                }
                Err(reason) if reason.is_misbehaviour() => {
                    out.push(Output::Misbehaved { peer: from, reason });
                }
                Err(_) => {}
            }
        }
        merged
    }

    /// Reports `record` in this input's [`Output::Merged`] and remembers its id prefix (see
    /// `rumored_by_prefix`). A record is merged once (the store refuses it again), so each
    /// goes on at most once without a check of its own here.
    fn note_merged(&mut self, record: &Arc<Record>) {
        self.merged.push(record.clone());
        let id = record.id();
        // A colliding prefix now names this record: the older one is no longer recognised
        // nor served by prefix (reconciliation carries it if need be).
        self.rumored_by_prefix.insert(prefix_of(&id), id);
        self.rumored.push_back(id);
        if self.rumored.len() > self.config.max_rumor_memory
            && let Some(old) = self.rumored.pop_front()
        {
            let old_prefix = prefix_of(&old);
            if self.rumored_by_prefix.get(&old_prefix) == Some(&old) {
                self.rumored_by_prefix.remove(&old_prefix);
            }
        }
    }

    /// Sends on, once, the records that became news during this input: to `push_fanout +
    /// announce_fanout` peers, eagerly (the records) to as many as their source calls for
    /// (see [`Source`]) and lazily (their ids) to the rest, who fetch what they lack.
    fn push_news(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.news.is_empty() {
            return;
        }
        let news = std::mem::take(&mut self.news);
        if self.config.push_fanout == 0 {
            return;
        }
        let mut records = Vec::new();
        let mut ids = Vec::new();
        let (mut from_peers, mut own, mut flood) = (false, false, false);
        // Peers known to hold every record of the batch: nothing is sent back to them.
        let mut holders: Option<HashSet<PeerId>> = None;
        let mut budget = self
            .config
            .max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD);
        for (record, source, sender) in news {
            if ids.len() >= MAX_ANNOUNCED_IDS {
                break; // The periodic exchanges carry the rest.
            }
            if !self.take_rumor_token(*record.owner(), now) {
                self.stats.rumors_suppressed += 1;
                continue;
            }
            let size = record.wire_len() + RECORD_OVERHEAD;
            if size > budget {
                // A burst larger than one message: the periodic exchanges carry the rest.
                continue;
            }
            budget -= size;
            from_peers |= source == Source::Peer;
            own |= matches!(source, Source::Own | Source::OwnRoutine);
            flood |= source == Source::Own;
            let prefix = prefix_of(&record.id());
            let announcers = self.fetching.get(&prefix).map(|f| f.holders.iter());
            let known: HashSet<PeerId> = sender
                .into_iter()
                .chain(announcers.into_iter().flatten().copied())
                .collect();
            holders = Some(match holders {
                None => known,
                Some(h) => h.intersection(&known).copied().collect(),
            });
            ids.push(ByteBuf::from(prefix.to_vec()));
            records.push(record);
        }
        if records.is_empty() {
            return;
        }
        let holders = holders.unwrap_or_default();
        let wanted = self.config.push_fanout + self.announce_fanout();
        let peers = if flood {
            // Every connected peer, and as many others as make `wanted`: a dial per peer to
            // flood would cost more than the round trips it spares.
            let mut peers = self.pick_push_peers(wanted.max(self.connected.len()), &holders);
            let connected = peers.iter().filter(|p| self.connected.contains(*p)).count();
            peers.truncate(connected.max(wanted));
            peers
        } else {
            self.pick_push_peers(wanted, &holders)
        };
        // One input brings news of one source: records from peers (some from their owner), a
        // publication of this node's, or the round's batch.
        let eager_count = if from_peers {
            self.config.push_fanout
        } else if own {
            peers.len()
        } else {
            0
        };
        let (eager, lazy) = peers.split_at(eager_count.min(peers.len()));
        if !eager.is_empty() {
            let batch = Arc::new(records.iter().map(|r| r.to_raw()).collect::<Vec<_>>());
            for &peer in eager {
                let forwards = self.config.push_feedback_forwards;
                self.send_push(peer, batch.clone(), forwards, now, out);
            }
        }
        // Ids go over open connections only: a dial costs a handshake, many times the bytes
        // and CPU of the few bytes announced.
        let lazy: Vec<PeerId> = lazy.iter().filter(|p| self.is_open(p)).copied().collect();
        // One way: the answer tells the announcer nothing it acts on, and a round trip
        // fewer is half the packets of an announcement (at most `wanted` per input).
        for to in lazy {
            self.stats.announces_sent += 1;
            out.push(Output::Notify {
                to,
                request: Request::Have(ids.clone()),
            });
        }
    }

    /// Up to `k` distinct members for news: uniformly among the connected ones first (a push
    /// over an open connection costs no dial), then uniformly among all members. With a
    /// view, only its members and the members whose views hold this node (connected ones
    /// first): news then travels the same bounded set of links as the rounds, and a
    /// connection outside the view (a rotation's) is not kept open by the pushes it would
    /// otherwise attract. Never one in `exclude` (peers known to hold the news).
    fn pick_push_peers(&mut self, k: usize, exclude: &HashSet<PeerId>) -> Vec<PeerId> {
        if !self.view_on() {
            let (store, peers) = (&self.store, &self.peers);
            let connected = self.connected.iter().filter(|p| !exclude.contains(*p));
            let members = connected.filter(|p| store.nodes().contains(*p) || peers.contains(*p));
            let connected: Vec<PeerId> = members.copied().collect();
            let mut picked = take_random(&mut self.rng, connected, k);
            if picked.len() < k {
                let mut exclude = exclude.clone();
                exclude.extend(picked.iter().copied());
                picked.extend(self.pick_peers(k - picked.len(), &exclude));
            }
            return picked;
        }
        // The view and the members whose views hold this node (the overlay taken both ways),
        // so that a node no view happens to hold still gets news at once.
        self.refresh_view();
        let members = &self.view.members;
        let inbound = self.inbound_members().filter(|p| !members.contains(p));
        let inbound: Vec<PeerId> = inbound.copied().collect();
        let (connected, rest): (Vec<PeerId>, Vec<PeerId>) = [members.clone(), inbound]
            .concat()
            .into_iter()
            .filter(|p| !exclude.contains(p))
            .partition(|p| self.connected.contains(p));
        let mut picked = take_random(&mut self.rng, connected, k);
        let more = k - picked.len();
        picked.extend(take_random(&mut self.rng, rest, more));
        picked
    }

    /// Peers the ids of news go to (besides the eager pushes).
    pub fn announce_fanout(&self) -> usize {
        self.config
            .announce_fanout
            .unwrap_or_else(|| (self.members().max(1) as f64).ln().ceil() as usize + 3)
    }

    /// Answers an id announcement: starts fetching, from the announcer, the ids this node
    /// lacks and is not already fetching; returns how many it fetches. Ids come as prefixes
    /// ([`ID_PREFIX_LEN`] bytes: this node lacks one unless it had a record with that prefix
    /// as news recently) or whole (from older peers: looked up in the store); every id has
    /// one of these lengths (checked by the caller).
    fn fetch_announced(
        &mut self,
        from: PeerId,
        ids: &[ByteBuf],
        now: u64,
        out: &mut Vec<Output>,
    ) -> u32 {
        // A fetch may run beside a full exchange with the same peer.
        if from == self.local || !self.rumor_room() {
            return 0;
        }
        let timeout = self.config.exchange_timeout_ms;
        if self.fetching.len() >= self.config.max_rumor_memory {
            self.fetching
                .retain(|_, f| now.saturating_sub(f.started_at) < timeout);
        }
        let mut need = VecDeque::new();
        for raw in ids.iter().take(MAX_ANNOUNCED_IDS) {
            let (prefix, want) = if let Ok(id) = <[u8; 32]>::try_from(&raw[..]).map(RecordId) {
                if self.store.get_by_id(&id).is_some() {
                    continue;
                }
                (prefix_of(&id), Want::Id(id))
            } else if let Ok(prefix) = IdPrefix::try_from(&raw[..]) {
                if self.rumored_by_prefix.contains_key(&prefix) {
                    continue;
                }
                (prefix, Want::Prefix(prefix))
            } else {
                continue;
            };
            if let Some(fetch) = self.fetching.get_mut(&prefix)
                && now.saturating_sub(fetch.started_at) < timeout
            {
                // Fetched from another announcer already: this one holds it too.
                if fetch.holders.len() < MAX_KNOWN_HOLDERS && !fetch.holders.contains(&from) {
                    fetch.holders.push(from);
                }
                continue;
            }
            if self.fetching.len() >= self.config.max_rumor_memory {
                continue;
            }
            let fetch = Fetch {
                started_at: now,
                holders: vec![from],
            };
            self.fetching.insert(prefix, fetch);
            need.push_back(want);
        }
        let wanted = need.len() as u32;
        if wanted == 0 {
            return 0;
        }
        self.stats.announced_fetched += u64::from(wanted);
        self.stats.exchanges_started += 1;
        let state = SyncState {
            peer: from,
            round_trips: 0,
            snapshot: None,
            have: VecDeque::new(),
            need,
            asked: Vec::new(),
        };
        self.next_step(state, None, now, out);
        wanted
    }

    fn send_push(
        &mut self,
        peer: PeerId,
        batch: Arc<Vec<RawRecord>>,
        forwards: u32,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        // Over an open connection, with no feedback to act on, one way like an announcement:
        // the `PushAck` would be a message per push that tells this node nothing it uses.
        let one_way = forwards == 0 && self.is_open(&peer);
        if !one_way && !self.rumor_room() {
            return; // Reconciliation carries what pushes cannot.
        }
        self.stats.pushes_sent += 1;
        self.stats.records_sent += batch.len() as u64;
        let request = Request::Push(batch.as_ref().clone());
        if one_way {
            out.push(Output::Notify { to: peer, request });
        } else {
            self.start(peer, now, Exchange::Push(batch, forwards), request, out);
        }
    }

    /// Takes one rumor token from `owner`'s bucket; false when it is empty.
    fn take_rumor_token(&mut self, owner: PeerId, now: u64) -> bool {
        let (rate, burst) = (
            self.config.rumor_rate_per_owner,
            self.config.rumor_burst_per_owner,
        );
        if !self.rumor_buckets.contains_key(&owner)
            && self.rumor_buckets.len() >= self.config.max_peers * 4
        {
            // Too many owners emitting at once to track: be conservative, do not amplify.
            return false;
        }
        let (tokens, at) = self.rumor_buckets.entry(owner).or_insert((burst, now));
        *tokens = (*tokens + rate * now.saturating_sub(*at) as f64 / 1000.0).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
