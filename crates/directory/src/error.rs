//! Why a record was not accepted.

/// The reason a record was not merged. Every rejection leaves the store unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Rejection {
    #[error("record is larger than the limit")]
    TooLarge,
    #[error("record is not valid CBOR of the record layout")]
    Malformed,
    #[error("record body is not canonically encoded")]
    NonCanonical,
    #[error("record format version is not supported")]
    UnsupportedVersion,
    #[error("owner key is not an inlined ed25519 key")]
    UnsupportedKey,
    #[error("signature does not verify against the owner's key")]
    BadSignature,
    #[error("name is empty, too long, or not allowed for this kind of record")]
    BadName,
    #[error("too many capabilities")]
    TooManyCapabilities,
    #[error("a capability is empty or too long")]
    BadCapability,
    #[error("endpoint is empty or too long")]
    BadEndpoint,
    #[error("too many addresses")]
    TooManyAddrs,
    #[error("metadata is too large")]
    MetaTooLarge,
    #[error("metadata keys are not sorted and unique")]
    BadMeta,
    #[error("expires_at is not after issued_at")]
    BadTimes,
    #[error("record has expired")]
    Expired,
    #[error("expires_at is further ahead than the maximum TTL plus the clock-skew allowance")]
    TooFarFuture,
    #[error("an equal or newer version of this key is already held")]
    Stale,
    #[error("this exact record is already held")]
    Duplicate,
    #[error("another version with the same seq and a larger id is held (the owner signed twice)")]
    ConflictLost,
    #[error("the store is full")]
    StoreFull,
    #[error("the owner holds the most records allowed")]
    OwnerFull,
}

impl Rejection {
    /// Every reason, for metrics.
    pub const ALL: [Rejection; 21] = [
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::NonCanonical,
        Rejection::UnsupportedVersion,
        Rejection::UnsupportedKey,
        Rejection::BadSignature,
        Rejection::BadName,
        Rejection::TooManyCapabilities,
        Rejection::BadCapability,
        Rejection::BadEndpoint,
        Rejection::TooManyAddrs,
        Rejection::MetaTooLarge,
        Rejection::BadMeta,
        Rejection::BadTimes,
        Rejection::Expired,
        Rejection::TooFarFuture,
        Rejection::Stale,
        Rejection::Duplicate,
        Rejection::ConflictLost,
        Rejection::StoreFull,
        Rejection::OwnerFull,
    ];

    /// A short stable name, for metrics labels and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::NonCanonical => "non_canonical",
            Rejection::UnsupportedVersion => "unsupported_version",
            Rejection::UnsupportedKey => "unsupported_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::BadName => "bad_name",
            Rejection::TooManyCapabilities => "too_many_capabilities",
            Rejection::BadCapability => "bad_capability",
            Rejection::BadEndpoint => "bad_endpoint",
            Rejection::TooManyAddrs => "too_many_addrs",
            Rejection::MetaTooLarge => "meta_too_large",
            Rejection::BadMeta => "bad_meta",
            Rejection::BadTimes => "bad_times",
            Rejection::Expired => "expired",
            Rejection::TooFarFuture => "too_far_future",
            Rejection::Stale => "stale",
            Rejection::Duplicate => "duplicate",
            Rejection::ConflictLost => "conflict_lost",
            Rejection::StoreFull => "store_full",
            Rejection::OwnerFull => "owner_full",
        }
    }

    /// Whether the sender of such a record broke the protocol (forged, tampered, malformed,
    /// out of bounds). Stale, duplicate, expired and capacity rejections happen between honest
    /// peers and are not held against them.
    pub fn is_misbehaviour(&self) -> bool {
        !matches!(
            self,
            Rejection::Stale
                | Rejection::Duplicate
                | Rejection::ConflictLost
                | Rejection::Expired
                | Rejection::StoreFull
                | Rejection::OwnerFull
        )
    }
}
