//! Signed records: the unit of the directory.
//!
//! A record is owned by a [`PeerId`] and keyed by `(owner, name)`. Its body is encoded as
//! canonical CBOR (a fixed-position array, so there is exactly one encoding of a body) and signed
//! by the owner's ed25519 key over `DOMAIN || body`. The owner's public key is not shipped: an
//! ed25519 PeerId *is* the (protobuf-encoded) public key, inlined as an identity multihash.
//! A record's identity ([`RecordId`]) is the SHA-256 of its signed body bytes.

use std::collections::BTreeMap;
use std::fmt;

use libp2p_identity::{Keypair, PeerId, PublicKey};
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::error::Rejection;
use crate::limits::Limits;

/// Prefix of every signed message, so a record signature can never be replayed as a signature
/// of any other protocol that uses the same key (libp2p identify, noise, ...).
pub const SIGNING_DOMAIN: &[u8] = b"gossipdir/record/v1\0";

/// Version of the body layout. A receiver rejects versions it does not know.
pub const FORMAT_VERSION: u8 = 2;

/// The reserved name of a node record: a node has exactly one, keyed `(owner, "")`.
pub const NODE_RECORD_NAME: &str = "";

/// Deepest CBOR nesting accepted while decoding a record (a body is 3 levels deep).
const RECURSION_LIMIT: usize = 8;

/// SHA-256 of a record's signed body bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub [u8; 32]);

impl RecordId {
    /// Hex form, for logs and the API.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The key of a record: at most one record per key lives in a store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub owner: PeerId,
    pub name: String,
}

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Where the node can be dialled, relayed (`/p2p-circuit`) addresses included.
    pub addrs: Vec<Multiaddr>,
    /// Protocol version string, e.g. `gossipdir/1`.
    pub protocol: String,
}

/// A service and what it can do.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Specialist {
    pub capabilities: Vec<String>,
    /// Where to reach the service: a multiaddr or a URL.
    pub endpoint: Option<String>,
    /// Free-form `key → value` pairs, sorted by key, keys unique (a record whose pairs are
    /// not is refused). A sorted `Vec` rather than a map: a one-entry `BTreeMap` allocates a
    /// ~530-byte node, a quarter of what a record costs a store.
    pub meta: Vec<(String, String)>,
    /// Kept alive by the owner's node record: listed only while that record is live
    /// ([`crate::Store::listed`]). The owner then re-signs the specialist rarely (a long
    /// lifetime) and its small node record often, so that keeping S specialists alive costs
    /// one record per refresh instead of S + 1. False: listed for its own lifetime alone.
    pub node_lease: bool,
}

/// The two kinds of record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Node(NodeInfo),
    Specialist(Specialist),
}

/// The signed part of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub owner: PeerId,
    pub name: String,
    /// Strictly increasing per key; the newest seq wins.
    pub seq: u64,
    /// Unix milliseconds.
    pub issued_at: u64,
    /// Unix milliseconds; the record disappears from every store at this instant.
    pub expires_at: u64,
    /// A withdrawal: it replaces older versions and is itself dropped at `expires_at`.
    pub withdrawn: bool,
    pub content: Content,
}

impl Body {
    pub fn key(&self) -> Key {
        Key {
            owner: self.owner,
            name: self.name.clone(),
        }
    }

    /// The capabilities, for a specialist that is not withdrawn; empty otherwise.
    pub fn capabilities(&self) -> &[String] {
        match (&self.content, self.withdrawn) {
            (Content::Specialist(s), false) => &s.capabilities,
            _ => &[],
        }
    }
}

/// The form a record travels in: `[body bytes, signature]`. Decoding one is cheap and checks
/// nothing; [`Record::from_raw`] does the checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord(pub ByteBuf, pub ByteBuf);

/// A structurally valid record (its signature is checked by [`Record::verify_signature`],
/// which the store calls before accepting it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    body: Body,
    body_bytes: Vec<u8>,
    signature: Vec<u8>,
    id: RecordId,
}

impl Record {
    /// Signs `body` with `keypair`, which must be the owner's.
    pub fn sign(body: Body, keypair: &Keypair, limits: &Limits) -> Result<Record, Rejection> {
        if keypair.public().to_peer_id() != body.owner {
            return Err(Rejection::BadSignature);
        }
        let body_bytes = encode_body(&body);
        let signature = keypair
            .sign(&signed_message(&body_bytes))
            .map_err(|_| Rejection::BadSignature)?;
        let record = Record {
            id: RecordId(Sha256::digest(&body_bytes).into()),
            body,
            body_bytes,
            signature,
        };
        record.check_shape(limits)?;
        Ok(record)
    }

    /// Checks everything but the signature and the clock: size, encoding (canonical), shape.
    pub fn from_raw(raw: RawRecord, limits: &Limits) -> Result<Record, Rejection> {
        let RawRecord(body_bytes, signature) = raw;
        if body_bytes.len() + signature.len() > limits.max_record_bytes {
            return Err(Rejection::TooLarge);
        }
        let wire: BodyWire =
            ciborium::de::from_reader_with_recursion_limit(&body_bytes[..], RECURSION_LIMIT)
                .map_err(|_| Rejection::Malformed)?;
        let body = wire.into_body()?;
        let body_bytes = body_bytes.into_vec();
        if encode_body(&body) != body_bytes {
            return Err(Rejection::NonCanonical);
        }
        let record = Record {
            id: RecordId(Sha256::digest(&body_bytes).into()),
            body,
            body_bytes,
            signature: signature.into_vec(),
        };
        record.check_shape(limits)?;
        Ok(record)
    }

    /// Decodes one standalone CBOR-encoded record (`[body, signature]`).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Record, Rejection> {
        if bytes.len() > limits.max_record_bytes + 16 {
            return Err(Rejection::TooLarge);
        }
        let raw: RawRecord = ciborium::de::from_reader_with_recursion_limit(bytes, RECURSION_LIMIT)
            .map_err(|_| Rejection::Malformed)?;
        Record::from_raw(raw, limits)
    }

    /// The standalone CBOR encoding of this record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body_bytes.len() + self.signature.len() + 8);
        // Writing CBOR into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(&self.to_raw(), &mut out);
        out
    }

    pub fn to_raw(&self) -> RawRecord {
        RawRecord(
            ByteBuf::from(self.body_bytes.clone()),
            ByteBuf::from(self.signature.clone()),
        )
    }

    /// Checks the owner's signature over the body.
    pub fn verify_signature(&self) -> Result<(), Rejection> {
        let key = owner_public_key(&self.body.owner)?;
        if key.verify(&signed_message(&self.body_bytes), &self.signature) {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// Checks the signatures of many records at once (ed25519 batch verification, about twice
    /// as fast per record as one by one); returns, per record, whether it verified. When the
    /// batch fails, records are checked one by one to find the bad ones.
    pub fn verify_signatures(records: &[&Record]) -> Vec<Result<(), Rejection>> {
        let mut results = vec![Ok(()); records.len()];
        let mut batch = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match record.batch_parts() {
                Ok(parts) => batch.push((i, parts)),
                Err(reason) => results[i] = Err(reason),
            }
        }
        let messages: Vec<&[u8]> = batch.iter().map(|(_, p)| &p.0[..]).collect();
        let signatures: Vec<ed25519_dalek::Signature> = batch.iter().map(|(_, p)| p.1).collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = batch.iter().map(|(_, p)| p.2).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_err() {
            for (i, (message, signature, key)) in &batch {
                if key.verify_strict(message, signature).is_err() {
                    results[*i] = Err(Rejection::BadSignature);
                }
            }
        }
        results
    }

    fn batch_parts(
        &self,
    ) -> Result<
        (
            Vec<u8>,
            ed25519_dalek::Signature,
            ed25519_dalek::VerifyingKey,
        ),
        Rejection,
    > {
        let key = owner_public_key(&self.body.owner)?
            .try_into_ed25519()
            .map_err(|_| Rejection::UnsupportedKey)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key.to_bytes())
            .map_err(|_| Rejection::UnsupportedKey)?;
        let signature = ed25519_dalek::Signature::from_slice(&self.signature)
            .map_err(|_| Rejection::BadSignature)?;
        Ok((signed_message(&self.body_bytes), signature, key))
    }

    pub fn body(&self) -> &Body {
        &self.body
    }
    pub fn id(&self) -> RecordId {
        self.id
    }
    pub fn key(&self) -> Key {
        self.body.key()
    }
    pub fn owner(&self) -> &PeerId {
        &self.body.owner
    }
    pub fn name(&self) -> &str {
        &self.body.name
    }
    pub fn seq(&self) -> u64 {
        self.body.seq
    }
    pub fn expires_at(&self) -> u64 {
        self.body.expires_at
    }
    pub fn issued_at(&self) -> u64 {
        self.body.issued_at
    }
    pub fn withdrawn(&self) -> bool {
        self.body.withdrawn
    }
    /// Bytes this record takes on the wire (body and signature, without framing).
    pub fn wire_len(&self) -> usize {
        self.body_bytes.len() + self.signature.len()
    }

    fn check_shape(&self, limits: &Limits) -> Result<(), Rejection> {
        let b = &self.body;
        if self.wire_len() > limits.max_record_bytes {
            return Err(Rejection::TooLarge);
        }
        if b.expires_at <= b.issued_at {
            return Err(Rejection::BadTimes);
        }
        match &b.content {
            Content::Node(node) => {
                if b.name != NODE_RECORD_NAME {
                    return Err(Rejection::BadName);
                }
                if node.addrs.len() > limits.max_addrs {
                    return Err(Rejection::TooManyAddrs);
                }
                if node.protocol.len() > limits.max_name_bytes {
                    return Err(Rejection::TooLarge);
                }
            }
            Content::Specialist(s) => {
                if b.name.is_empty() || b.name.len() > limits.max_name_bytes {
                    return Err(Rejection::BadName);
                }
                if s.capabilities.len() > limits.max_capabilities {
                    return Err(Rejection::TooManyCapabilities);
                }
                if s.capabilities
                    .iter()
                    .any(|c| c.is_empty() || c.len() > limits.max_capability_bytes)
                {
                    return Err(Rejection::BadCapability);
                }
                if s.endpoint
                    .as_ref()
                    .is_some_and(|e| e.is_empty() || e.len() > limits.max_endpoint_bytes)
                {
                    return Err(Rejection::BadEndpoint);
                }
                if s.meta.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(Rejection::BadMeta);
                }
                let meta_bytes: usize = s.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
                if meta_bytes > limits.max_meta_bytes {
                    return Err(Rejection::MetaTooLarge);
                }
            }
        }
        Ok(())
    }
}

/// The ed25519 public key inlined in an owner's PeerId.
fn owner_public_key(owner: &PeerId) -> Result<PublicKey, Rejection> {
    let multihash = owner.as_ref();
    if multihash.code() != 0 {
        // A hashed PeerId (RSA and other large keys) does not carry its key.
        return Err(Rejection::UnsupportedKey);
    }
    PublicKey::try_decode_protobuf(multihash.digest()).map_err(|_| Rejection::UnsupportedKey)
}

fn signed_message(body_bytes: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + body_bytes.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(body_bytes);
    msg
}

fn encode_body(body: &Body) -> Vec<u8> {
    let wire = BodyWire::from_body(body);
    let mut out = Vec::with_capacity(256);
    // Writing CBOR into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&wire, &mut out);
    out
}

/// The body as it is encoded: a CBOR array in fixed field order, so encoding is canonical.
#[derive(Serialize, Deserialize)]
struct BodyWire(
    u8,          // format version
    ByteBuf,     // owner PeerId bytes
    String,      // name
    u64,         // seq
    u64,         // issued_at
    u64,         // expires_at
    bool,        // withdrawn
    ContentWire, // content
);

#[derive(Serialize, Deserialize)]
enum ContentWire {
    /// `[addrs, protocol]`
    #[serde(rename = "n")]
    Node(Vec<ByteBuf>, String),
    /// `[capabilities, endpoint, meta, node_lease]`
    #[serde(rename = "s")]
    Specialist(Vec<String>, Option<String>, BTreeMap<String, String>, bool),
}

impl BodyWire {
    fn from_body(b: &Body) -> BodyWire {
        let content = match &b.content {
            Content::Node(n) => ContentWire::Node(
                n.addrs.iter().map(|a| ByteBuf::from(a.to_vec())).collect(),
                n.protocol.clone(),
            ),
            Content::Specialist(s) => ContentWire::Specialist(
                s.capabilities.clone(),
                s.endpoint.clone(),
                s.meta.iter().cloned().collect(),
                s.node_lease,
            ),
        };
        BodyWire(
            FORMAT_VERSION,
            ByteBuf::from(b.owner.to_bytes()),
            b.name.clone(),
            b.seq,
            b.issued_at,
            b.expires_at,
            b.withdrawn,
            content,
        )
    }

    fn into_body(self) -> Result<Body, Rejection> {
        let BodyWire(version, owner, name, seq, issued_at, expires_at, withdrawn, content) = self;
        if version != FORMAT_VERSION {
            return Err(Rejection::UnsupportedVersion);
        }
        let owner = PeerId::from_bytes(&owner).map_err(|_| Rejection::Malformed)?;
        let content = match content {
            ContentWire::Node(addrs, protocol) => Content::Node(NodeInfo {
                addrs: addrs
                    .into_iter()
                    .map(|a| Multiaddr::try_from(a.into_vec()).map_err(|_| Rejection::Malformed))
                    .collect::<Result<_, _>>()?,
                protocol,
            }),
            ContentWire::Specialist(capabilities, endpoint, meta, node_lease) => {
                Content::Specialist(Specialist {
                    capabilities,
                    endpoint,
                    meta: meta.into_iter().collect(),
                    node_lease,
                })
            }
        };
        Ok(Body {
            owner,
            name,
            seq,
            issued_at,
            expires_at,
            withdrawn,
            content,
        })
    }
}
