//! The TTL store: at most one record per key, the newest valid one, gone at its `expires_at`.
//!
//! Merge rule (a state-based CRDT, last-writer-wins per key): a record is accepted only if it is
//! well-formed and within bounds, not expired, does not expire further ahead than the maximum
//! TTL plus the clock-skew allowance, is newer than what the store holds for its key, and its
//! signature verifies. Two versions with the same key and seq but different bytes are a
//! conflict: the one with the larger [`RecordId`] wins everywhere, and conflicts are counted.
//! The cheap checks run first; the signature is verified last, before the record touches the
//! store, so a flood of stale or out-of-bounds records costs no signature checks. Records that
//! arrive together are verified in one ed25519 batch ([`Store::merge_batch`]).
//!
//! Keep-alive: a specialist issued with `node_lease` is listed only while its owner's node
//! record is live ([`Store::listed`]). Owners re-sign their small node record often and such
//! specialists rarely, so keeping S specialists alive costs one record per refresh, not S + 1.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexSet;
use libp2p_identity::PeerId;

use crate::error::Rejection;
use crate::limits::Limits;
use crate::record::{Content, Key, Record, RecordId};

/// What a successful merge did.
#[derive(Debug, Clone)]
pub struct Merged {
    pub record: Arc<Record>,
    /// The key was not held before.
    pub new_key: bool,
    /// The record replaced a conflicting version with the same seq.
    pub conflict: bool,
    /// The record only extends the life of the held version: same content, same withdrawn
    /// flag, a newer seq and expiry (an owner's periodic re-signing).
    pub refresh: bool,
}

/// Counters, for metrics and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records accepted (new keys and newer versions).
    pub merged: u64,
    /// Records removed because they expired.
    pub expired: u64,
    /// Same key and seq, different bytes: resolved by the larger id.
    pub conflicts: u64,
    /// Rejected records, by reason.
    pub rejected: BTreeMap<Rejection, u64>,
}

/// The directory held by one node.
#[derive(Debug, Clone)]
pub struct Store {
    limits: Limits,
    records: HashMap<Key, Arc<Record>>,
    /// Every held record by id (the same `Arc` as in `records`: no second copy of its key).
    by_id: HashMap<RecordId, Arc<Record>>,
    /// Every held record by expiry instant, so expiry costs O(expired · log n), not a scan.
    expiry: BTreeSet<(u64, RecordId)>,
    /// Capability → keys of the live (not withdrawn) specialists that have it.
    /// Capability → ids of the live (not withdrawn) specialists that have it (a 32-byte id
    /// instead of a copy of the key, whose `PeerId` alone takes 80 bytes).
    capabilities: HashMap<String, HashSet<RecordId>>,
    /// Owners of live (not withdrawn) node records, indexable for uniform sampling.
    nodes: IndexSet<PeerId>,
    per_owner: HashMap<PeerId, usize>,
    stats: StoreStats,
    /// Bumped on every change; lets derived structures (reconciliation snapshots) be cached.
    version: u64,
    /// Extra far-future allowance: how far the owner of the store moved its clock to agree
    /// with its peers (see [`Store::set_clock_correction`]).
    clock_correction_ms: u64,
}

impl Store {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            records: HashMap::new(),
            by_id: HashMap::new(),
            expiry: BTreeSet::new(),
            capabilities: HashMap::new(),
            nodes: IndexSet::new(),
            per_owner: HashMap::new(),
            stats: StoreStats::default(),
            version: 0,
            clock_correction_ms: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tells the store how far (either way) its owner corrected its clock to agree with its
    /// peers. The caller passes the earlier of its local and corrected times as `now`, and the
    /// far-future horizon widens by the correction, so a record is accepted and kept whenever
    /// either clock would keep it: a wrong correction (peers lying about time) can make the
    /// store more lenient by at most the correction, never drop a live record early.
    pub fn set_clock_correction(&mut self, ms: u64) {
        self.clock_correction_ms = ms;
    }

    /// Merges one record at time `now` (unix ms). On rejection the store is unchanged.
    pub fn merge(&mut self, record: Record, now: u64) -> Result<Merged, Rejection> {
        let result = self
            .precheck(&record, now)
            .and_then(|()| record.verify_signature())
            .and_then(|()| self.apply(record, now));
        self.count(&result);
        result
    }

    /// Merges many records, in order, verifying their signatures in one batch. The result is
    /// the same as merging them one by one with [`Store::merge`].
    pub fn merge_batch(
        &mut self,
        records: Vec<Record>,
        now: u64,
    ) -> Vec<Result<Merged, Rejection>> {
        let prechecks: Vec<Result<(), Rejection>> =
            records.iter().map(|r| self.precheck(r, now)).collect();
        let candidates: Vec<&Record> = records
            .iter()
            .zip(&prechecks)
            .filter(|(_, p)| p.is_ok())
            .map(|(r, _)| r)
            .collect();
        let mut verified = Record::verify_signatures(&candidates).into_iter();
        let mut results = Vec::with_capacity(records.len());
        for (record, precheck) in records.into_iter().zip(prechecks) {
            let result = precheck
                .and_then(|()| verified.next().unwrap_or(Err(Rejection::BadSignature)))
                // The checks run again: an earlier record of the batch may have changed the store.
                .and_then(|()| self.precheck(&record, now))
                .and_then(|()| self.apply(record, now));
            self.count(&result);
            results.push(result);
        }
        results
    }

    fn count(&mut self, result: &Result<Merged, Rejection>) {
        match result {
            Ok(_) => self.stats.merged += 1,
            Err(reason) => {
                if *reason == Rejection::ConflictLost {
                    self.stats.conflicts += 1;
                }
                *self.stats.rejected.entry(*reason).or_default() += 1
            }
        }
    }

    /// Every check but the signature: bounds, clock, newer than what is held, capacity.
    fn precheck(&mut self, record: &Record, now: u64) -> Result<(), Rejection> {
        self.expire(now);
        let limits = &self.limits;
        if record.wire_len() > limits.max_record_bytes {
            return Err(Rejection::TooLarge);
        }
        if record.expires_at() <= now {
            return Err(Rejection::Expired);
        }
        let horizon = now
            .saturating_add(limits.max_ttl_ms)
            .saturating_add(limits.clock_skew_ms)
            .saturating_add(self.clock_correction_ms);
        if record.expires_at() > horizon {
            return Err(Rejection::TooFarFuture);
        }
        match self.records.get(&record.key()) {
            Some(held) if (held.seq(), held.id()) == (record.seq(), record.id()) => {
                Err(Rejection::Duplicate)
            }
            Some(held) if held.seq() > record.seq() => Err(Rejection::Stale),
            Some(held) if held.seq() == record.seq() && held.id() > record.id() => {
                Err(Rejection::ConflictLost)
            }
            Some(_) => Ok(()),
            None if self.records.len() >= limits.max_records => Err(Rejection::StoreFull),
            None if self.per_owner.get(record.owner()).copied().unwrap_or(0)
                >= limits.max_records_per_owner =>
            {
                Err(Rejection::OwnerFull)
            }
            None => Ok(()),
        }
    }

    /// Stores a record that passed every check, replacing the held version of its key.
    fn apply(&mut self, record: Record, _now: u64) -> Result<Merged, Rejection> {
        let key = record.key();
        let previous = self.remove(&key);
        let conflict = previous.as_ref().is_some_and(|p| p.seq() == record.seq());
        if conflict {
            self.stats.conflicts += 1;
        }
        let refresh = !conflict
            && previous.as_ref().is_some_and(|p| {
                p.withdrawn() == record.withdrawn() && p.body().content == record.body().content
            });
        let record = Arc::new(record);
        self.insert(key, record.clone());
        Ok(Merged {
            record,
            new_key: previous.is_none(),
            conflict,
            refresh,
        })
    }

    /// Drops every record whose `expires_at` is at or before `now`. Returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut count = 0;
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            match self.by_id.get(&id).map(|r| r.key()) {
                Some(key) => {
                    self.remove(&key);
                }
                None => {
                    self.expiry.pop_first();
                }
            }
            count += 1;
        }
        self.stats.expired += count as u64;
        count
    }

    /// Whether `owner`'s node record is held, not withdrawn and not expired at `now`.
    pub fn node_live(&self, owner: &PeerId, now: u64) -> bool {
        let key = Key {
            owner: *owner,
            name: String::new(),
        };
        self.records
            .get(&key)
            .is_some_and(|n| !n.withdrawn() && n.expires_at() > now)
    }

    /// Whether `record` is a listed specialist at `now`: not withdrawn, not expired, and, when
    /// it was issued with `node_lease`, kept alive by its owner's node record (live at `now`).
    /// Such a specialist's own lifetime is long (it is re-signed rarely); its owner's
    /// frequently refreshed node record is what says the owner is still there, so the
    /// specialist leaves every listing as soon as that node record expires or is withdrawn.
    /// The record itself stays held (and reconciled) until its own `expires_at`, so every
    /// store holds the same set whatever order records arrived in.
    pub fn listed(&self, record: &Record, now: u64) -> bool {
        match &record.body().content {
            Content::Specialist(s) => {
                !record.withdrawn()
                    && record.expires_at() > now
                    && (!s.node_lease || self.node_live(record.owner(), now))
            }
            Content::Node(_) => false,
        }
    }

    /// The listed specialists ([`Store::listed`]) that have every capability in `capabilities`
    /// (all of them when it is empty), sorted by key. Answered from the index.
    pub fn query(&self, capabilities: &[String], now: u64) -> Vec<Arc<Record>> {
        let live = |r: &Arc<Record>| self.listed(r, now);
        let mut out: Vec<Arc<Record>> = if capabilities.is_empty() {
            self.records.values().filter(|r| live(r)).cloned().collect()
        } else {
            let mut sets = Vec::with_capacity(capabilities.len());
            for cap in capabilities {
                match self.capabilities.get(cap) {
                    Some(set) => sets.push(set),
                    None => return Vec::new(),
                }
            }
            sets.sort_by_key(|s| s.len());
            let Some((smallest, rest)) = sets.split_first() else {
                return Vec::new();
            };
            smallest
                .iter()
                .filter(|id| rest.iter().all(|s| s.contains(*id)))
                .filter_map(|id| self.by_id.get(id))
                .filter(|r| live(r))
                .cloned()
                .collect()
        };
        out.sort_by(|a, b| (a.owner(), a.name()).cmp(&(b.owner(), b.name())));
        out
    }

    pub fn get(&self, key: &Key) -> Option<&Arc<Record>> {
        self.records.get(key)
    }

    pub fn get_by_id(&self, id: &RecordId) -> Option<&Arc<Record>> {
        self.by_id.get(id)
    }

    /// Every held record (withdrawals included), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.records.values()
    }

    /// Number of held records (withdrawals included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Owners of live node records.
    pub fn nodes(&self) -> &IndexSet<PeerId> {
        &self.nodes
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Changes with every insertion and removal.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn insert(&mut self, key: Key, record: Arc<Record>) {
        let id = record.id();
        self.expiry.insert((record.expires_at(), id));
        self.by_id.insert(id, record.clone());
        *self.per_owner.entry(*record.owner()).or_default() += 1;
        if !record.withdrawn() {
            match &record.body().content {
                Content::Node(_) => {
                    self.nodes.insert(*record.owner());
                }
                Content::Specialist(s) => {
                    for cap in &s.capabilities {
                        self.capabilities.entry(cap.clone()).or_default().insert(id);
                    }
                }
            }
        }
        self.records.insert(key, record);
        self.version += 1;
    }

    fn remove(&mut self, key: &Key) -> Option<Arc<Record>> {
        let record = self.records.remove(key)?;
        self.expiry.remove(&(record.expires_at(), record.id()));
        self.by_id.remove(&record.id());
        if let Some(n) = self.per_owner.get_mut(record.owner()) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(record.owner());
            }
        }
        match &record.body().content {
            Content::Node(_) => {
                self.nodes.swap_remove(record.owner());
            }
            Content::Specialist(s) => {
                for cap in &s.capabilities {
                    if let Some(set) = self.capabilities.get_mut(cap) {
                        set.remove(&record.id());
                        if set.is_empty() {
                            self.capabilities.remove(cap);
                        }
                    }
                }
            }
        }
        self.version += 1;
        Some(record)
    }
}
