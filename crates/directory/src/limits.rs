//! Bounds on records and on the store. Every number is configurable; the defaults are the
//! ones the protocol documents (docs/PROTOCOL.md), chosen so that one record fits comfortably
//! in a single network frame and a full store stays within a few hundred MiB.

/// One minute in milliseconds.
const MINUTE_MS: u64 = 60_000;

/// Limits checked before a record touches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded record (signed body plus signature), in bytes.
    pub max_record_bytes: usize,
    /// Largest record name (specialists), in bytes.
    pub max_name_bytes: usize,
    /// Most capability strings on one specialist.
    pub max_capabilities: usize,
    /// Longest capability string, in bytes.
    pub max_capability_bytes: usize,
    /// Most multiaddrs on one node record.
    pub max_addrs: usize,
    /// Largest specialist endpoint (multiaddr or URL), in bytes.
    pub max_endpoint_bytes: usize,
    /// Total bytes of metadata keys and values on one specialist.
    pub max_meta_bytes: usize,
    /// Longest lifetime a record may claim: `expires_at` may lie at most this far (plus the skew
    /// allowance) ahead of the receiver's clock. Bounds how long any record, withdrawals included,
    /// can live without being refreshed.
    pub max_ttl_ms: u64,
    /// Clock-skew allowance between an owner and a receiver.
    pub clock_skew_ms: u64,
    /// Most records in the store (all owners).
    pub max_records: usize,
    /// Most records one owner may hold in the store.
    pub max_records_per_owner: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: 4096,
            max_name_bytes: 128,
            max_capabilities: 32,
            max_capability_bytes: 64,
            max_addrs: 16,
            max_endpoint_bytes: 512,
            max_meta_bytes: 1024,
            max_ttl_ms: 60 * MINUTE_MS,
            clock_skew_ms: 30_000,
            max_records: 100_000,
            max_records_per_owner: 64,
        }
    }
}
