//! Wire messages of `/gossipdir/sync/1.0.0`: serde types encoded with ciborium.
//!
//! Every message is a CBOR array `[version, body]` and at most [`MAX_MESSAGE_BYTES`] long by
//! default; decoding reads from a byte slice that the transport already bounded, with a
//! recursion limit, and never allocates from a declared length before the bytes exist
//! (ciborium reads byte and text strings in chunks). Records travel as [`RawRecord`]s and are
//! checked one by one by the engine, so one bad record does not void the rest of a message.

use directory::RawRecord;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Version of the message layout; a peer answering another version is refused.
pub const WIRE_VERSION: u8 = 1;

/// Default hard limit on one encoded message, both directions.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Deepest CBOR nesting a message may have (the deepest legal message is 6 levels).
const RECURSION_LIMIT: usize = 16;

/// Bytes of framing a message adds around its records and ids, at most (version, tags,
/// array headers, counts). Used to keep built messages under the limit.
pub const MESSAGE_OVERHEAD: usize = 64;

/// Bytes one record adds to a message beyond its body and signature (two byte-string
/// headers and an array header).
pub const RECORD_OVERHEAD: usize = 12;

/// Bytes one wanted id adds to a message (a 32-byte string and its header).
pub const ID_BYTES: usize = 34;

/// Length of the id prefixes that announce news ([`Request::Have`]) and fetch it: the first
/// bytes of the record id (SHA-256 of the signed body).
pub const ID_PREFIX_LEN: usize = 8;

/// Bytes one id prefix adds to a message (an 8-byte string and its header).
pub const PREFIX_BYTES: usize = ID_PREFIX_LEN + 1;

/// A request: sent by the side that starts an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens an exchange with the summary of the sender's set: `[count, fingerprint]`.
    #[serde(rename = "s")]
    Summary(u64, ByteBuf),
    /// One reconciliation step: `[negentropy message or null, records the receiver lacks,
    /// ids the sender wants]`. A wanted id is a whole record id (32 bytes) or, to fetch
    /// announced news, the [`ID_PREFIX_LEN`]-byte prefix it was announced under; any other
    /// length is refused.
    #[serde(rename = "r")]
    Reconcile(Option<ByteBuf>, Vec<RawRecord>, Vec<ByteBuf>),
    /// Records that are news to the sender, pushed on at once (rumor mongering).
    #[serde(rename = "p")]
    Push(Vec<RawRecord>),
    /// Ids of records that are news to the sender (lazy push), as their [`ID_PREFIX_LEN`]-byte
    /// prefixes (whole 32-byte ids are accepted too; any other length is refused): the
    /// receiver fetches those it lacks by prefix with a `Reconcile(null, [], wants)` exchange.
    /// One way: the sender waits for no answer; a transport that needs one gets
    /// `PushAck(ids it lacks)`. A prefix that names another record than the
    /// sender meant costs at most that announcement: records are verified as always.
    #[serde(rename = "h")]
    Have(Vec<ByteBuf>),
}

impl Request {
    /// The request's kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Summary(..) => "summary",
            Request::Reconcile(..) => "reconcile",
            Request::Push(..) => "push",
            Request::Have(..) => "have",
        }
    }
}

/// A response: exactly one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The summaries match: nothing to exchange. Carries the answering node's network time
    /// (unix ms), from which the requester estimates its clock offset (see [`crate::clock`]).
    #[serde(rename = "i")]
    InSync(u64),
    /// The summaries differ: the requester goes on with [`Request::Reconcile`]. Carries the
    /// answering node's network time, as `InSync`.
    #[serde(rename = "d")]
    Differ(u64),
    /// `[negentropy answer or null, wanted records found, how many wants were processed]`.
    #[serde(rename = "r")]
    Reconcile(Option<ByteBuf>, Vec<RawRecord>, u32),
    /// How many of the pushed records (or announced ids) were new to the receiver (feedback
    /// for the pusher).
    #[serde(rename = "p")]
    PushAck(u32),
    /// The request was refused (malformed, over a limit, or the peer is penalised).
    #[serde(rename = "e")]
    Refused(String),
}

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("message is not valid CBOR of the expected layout")]
    Malformed,
    #[error("message has version {0}, expected {WIRE_VERSION}")]
    UnsupportedVersion(u8),
    #[error("message has trailing bytes after its end")]
    TrailingData,
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T>(u8, &'a T);

#[derive(Deserialize)]
struct Envelope<T>(u8, T);

/// Encodes a message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&EnvelopeRef(WIRE_VERSION, message), &mut out);
    out
}

/// Decodes a message of at most `limit` bytes.
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge(bytes.len(), limit));
    }
    let mut reader = bytes;
    let Envelope(version, message): Envelope<T> =
        ciborium::de::from_reader_with_recursion_limit(&mut reader, RECURSION_LIMIT)
            .map_err(|_| DecodeError::Malformed)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if !reader.is_empty() {
        return Err(DecodeError::TrailingData);
    }
    Ok(message)
}
