//! Range-based set reconciliation of two stores (Negentropy, via the `negentropy` crate).
//!
//! The set reconciled is the set of held records' ids, each item ordered by `(issued_at, id)`.
//! A [`Snapshot`] is the sorted, sealed item list of a store at one version; it is rebuilt only
//! when the store changed. Its [`Summary`] (count and the Negentropy fingerprint of the whole
//! set) lets two equal stores settle in one small round trip before any range is exchanged.
//!
//! Roles: the side that starts an exchange is the Negentropy *initiator* and learns which ids
//! each side lacks; the other side answers statelessly from its snapshot, so an answering node
//! keeps no per-exchange state.

use negentropy::{Id, Negentropy, NegentropyStorageBase, NegentropyStorageVector};

use crate::record::RecordId;
use crate::store::Store;

/// Largest Negentropy message, in bytes. Larger differences take more round trips.
pub const FRAME_LIMIT: u64 = 64 * 1024;

/// Errors from a malformed or unexpected reconciliation message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reconciliation message rejected: {0}")]
pub struct ReconcileError(String);

impl From<negentropy::Error> for ReconcileError {
    fn from(e: negentropy::Error) -> Self {
        ReconcileError(e.to_string())
    }
}

/// The whole set in 24 bytes: equal summaries mean (with overwhelming probability) equal sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub fingerprint: [u8; 16],
}

/// A store's item list at one version.
#[derive(Debug)]
pub struct Snapshot {
    storage: NegentropyStorageVector,
    summary: Summary,
    version: u64,
}

impl Snapshot {
    pub fn build(store: &Store) -> Snapshot {
        let mut storage = NegentropyStorageVector::with_capacity(store.len());
        // A fresh vector is unsealed, so inserting and sealing it once cannot fail, and the
        // whole range of a sealed vector is always a valid range.
        for record in store.iter() {
            let _ = storage.insert(record.issued_at(), Id::from_byte_array(record.id().0));
        }
        let _ = storage.seal();
        let count = storage.size().unwrap_or(0);
        let fingerprint = storage
            .fingerprint(0, count)
            .map(|f| f.to_bytes())
            .unwrap_or_default();
        Snapshot {
            storage,
            summary: Summary {
                count: count as u64,
                fingerprint,
            },
            version: store.version(),
        }
    }

    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// The store version this snapshot was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The initiator's first message.
    pub fn initiate(&self) -> Result<Vec<u8>, ReconcileError> {
        let mut neg = Negentropy::borrowed(&self.storage, FRAME_LIMIT)?;
        Ok(neg.initiate()?)
    }

    /// The answering side: one message in, one message out, no state kept.
    pub fn respond(&self, query: &[u8]) -> Result<Vec<u8>, ReconcileError> {
        let mut neg = Negentropy::borrowed(&self.storage, FRAME_LIMIT)?;
        Ok(neg.reconcile(query)?)
    }

    /// The initiator's step: the next message (None when done) and the ids found so far that
    /// only this side has (`have`) and only the other side has (`need`).
    pub fn step(&self, answer: &[u8]) -> Result<Step, ReconcileError> {
        let mut neg = Negentropy::borrowed(&self.storage, FRAME_LIMIT)?;
        neg.set_initiator();
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let next = neg.reconcile_with_ids(answer, &mut have, &mut need)?;
        let ids = |v: Vec<Id>| v.into_iter().map(|id| RecordId(id.to_bytes())).collect();
        Ok(Step {
            next,
            have: ids(have),
            need: ids(need),
        })
    }
}

/// One initiator step.
#[derive(Debug, Default)]
pub struct Step {
    pub next: Option<Vec<u8>>,
    pub have: Vec<RecordId>,
    pub need: Vec<RecordId>,
}
