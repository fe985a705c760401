//! The owner's side: making the records a node publishes about itself and its specialists.
//!
//! Two rules keep the merge rule sound across restarts and withdrawals:
//! - `seq` is `max(last + 1, now)`: derived from the clock, so a restarted node that lost its
//!   state still issues newer versions, and persisted (see [`Issuer::restore`]) so a node whose
//!   clock went backwards never reuses a lower one.
//! - `expires_at` never decreases for a key: a new version (a withdrawal in particular) lives at
//!   least as long as every version issued before it, so no older version can outlive it and
//!   come back.

use std::collections::HashMap;

use libp2p_identity::{Keypair, PeerId};

use crate::error::Rejection;
use crate::limits::Limits;
use crate::record::{Body, Content, NODE_RECORD_NAME, NodeInfo, Record, Specialist};

/// What was last issued for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub seq: u64,
    pub expires_at: u64,
}

/// Signs the records of one owner.
#[derive(Debug)]
pub struct Issuer {
    keypair: Keypair,
    owner: PeerId,
    limits: Limits,
    last: HashMap<String, Issued>,
}

impl Issuer {
    pub fn new(keypair: Keypair, limits: Limits) -> Self {
        Self {
            owner: keypair.public().to_peer_id(),
            keypair,
            limits,
            last: HashMap::new(),
        }
    }

    pub fn owner(&self) -> PeerId {
        self.owner
    }

    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Remembers what an earlier run issued (from persisted state).
    pub fn restore(&mut self, name: &str, issued: Issued) {
        let entry = self.last.entry(name.to_owned()).or_insert(issued);
        entry.seq = entry.seq.max(issued.seq);
        entry.expires_at = entry.expires_at.max(issued.expires_at);
    }

    /// What was last issued, per name (to persist).
    pub fn issued(&self) -> impl Iterator<Item = (&str, Issued)> {
        self.last.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The node record: this node's addresses and protocol version.
    pub fn node_record(
        &mut self,
        node: NodeInfo,
        ttl_ms: u64,
        now: u64,
    ) -> Result<Record, Rejection> {
        self.issue(NODE_RECORD_NAME, Content::Node(node), false, ttl_ms, now)
    }

    /// A specialist record (a new one or a refresh).
    pub fn specialist(
        &mut self,
        name: &str,
        specialist: Specialist,
        ttl_ms: u64,
        now: u64,
    ) -> Result<Record, Rejection> {
        if name == NODE_RECORD_NAME {
            return Err(Rejection::BadName);
        }
        self.issue(name, Content::Specialist(specialist), false, ttl_ms, now)
    }

    /// A withdrawal of `name` (the node record when `name` is empty).
    pub fn withdrawal(&mut self, name: &str, ttl_ms: u64, now: u64) -> Result<Record, Rejection> {
        let content = if name == NODE_RECORD_NAME {
            Content::Node(NodeInfo {
                addrs: Vec::new(),
                protocol: String::new(),
            })
        } else {
            Content::Specialist(Specialist::default())
        };
        self.issue(name, content, true, ttl_ms, now)
    }

    fn issue(
        &mut self,
        name: &str,
        content: Content,
        withdrawn: bool,
        ttl_ms: u64,
        now: u64,
    ) -> Result<Record, Rejection> {
        let ttl_ms = ttl_ms.clamp(1, self.limits.max_ttl_ms);
        let previous = self.last.get(name).copied();
        let seq = previous.map_or(now, |p| p.seq.saturating_add(1).max(now));
        let expires_at = previous.map_or(0, |p| p.expires_at).max(now + ttl_ms);
        // A previous version may have been issued with a longer TTL than the limit now allows.
        let expires_at = expires_at.min(now + self.limits.max_ttl_ms);
        let body = Body {
            owner: self.owner,
            name: name.to_owned(),
            seq,
            issued_at: now,
            expires_at,
            withdrawn,
            content,
        };
        let record = Record::sign(body, &self.keypair, &self.limits)?;
        self.last
            .insert(name.to_owned(), Issued { seq, expires_at });
        Ok(record)
    }
}
