//! The directory of specialists: signed records, the TTL store and its merge rule, and
//! range-based reconciliation of two stores. No I/O: time comes in as unix milliseconds.
//!
//! - [`record`]: the record format, canonical CBOR encoding, ed25519 signatures.
//! - [`store`]: the TTL store, the merge rule, expiry, the capability index.
//! - [`issuer`]: the owner's side, making records that never go backwards.
//! - [`reconcile`]: Negentropy snapshots and steps over a store.
//! - [`limits`]: every bound, with its default.

pub mod error;
pub mod issuer;
pub mod limits;
pub mod reconcile;
pub mod record;
pub mod sample;
pub mod store;

pub use error::Rejection;
pub use issuer::{Issued, Issuer};
pub use limits::Limits;
pub use reconcile::{ReconcileError, Snapshot, Step, Summary};
pub use record::{
    Body, Content, Key, NODE_RECORD_NAME, NodeInfo, RawRecord, Record, RecordId, Specialist,
};
pub use store::{Merged, Store, StoreStats};

pub use libp2p_identity::{Keypair, PeerId};
pub use multiaddr::Multiaddr;
