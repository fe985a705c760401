//! Ready-made signed records, for tests, benchmarks and the simulator.

use libp2p_identity::Keypair;

use crate::limits::Limits;
use crate::record::{Body, Content, NodeInfo, Record, Specialist};

/// A deterministic ed25519 keypair from a number (not secret: for tests and simulations only).
pub fn keypair(n: u64) -> Keypair {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&n.to_le_bytes());
    secret[31] = 0x5a;
    // 32 bytes are always a valid ed25519 secret.
    Keypair::ed25519_from_bytes(secret).expect("32-byte ed25519 secret")
}

/// A signed specialist record of `keypair` named `name`, with capabilities `caps`.
pub fn specialist(
    keypair: &Keypair,
    name: &str,
    caps: &[&str],
    seq: u64,
    issued_at: u64,
    ttl_ms: u64,
) -> Record {
    let body = Body {
        owner: keypair.public().to_peer_id(),
        name: name.to_owned(),
        seq,
        issued_at,
        expires_at: issued_at + ttl_ms,
        withdrawn: false,
        content: Content::Specialist(Specialist {
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            endpoint: Some(format!("https://{name}.example/v1")),
            meta: vec![("region".to_owned(), "eu".to_owned())],
            node_lease: false,
        }),
    };
    Record::sign(body, keypair, &Limits::default()).expect("sample record within limits")
}

/// A signed node record of `keypair` with no addresses.
pub fn node(keypair: &Keypair, seq: u64, issued_at: u64, ttl_ms: u64) -> Record {
    let body = Body {
        owner: keypair.public().to_peer_id(),
        name: String::new(),
        seq,
        issued_at,
        expires_at: issued_at + ttl_ms,
        withdrawn: false,
        content: Content::Node(NodeInfo {
            addrs: vec!["/ip4/127.0.0.1/tcp/4101".parse().expect("valid multiaddr")],
            protocol: "gossipdir/1".to_owned(),
        }),
    };
    Record::sign(body, keypair, &Limits::default()).expect("sample record within limits")
}

/// `n` specialist records from distinct owners `first..first + n` (one record each), issued at
/// `now` with a one-hour TTL. About 230 bytes each on the wire.
pub fn population(first: u64, n: u64, now: u64) -> Vec<Record> {
    (first..first + n)
        .map(|i| {
            let kp = keypair(i);
            specialist(
                &kp,
                &format!("svc-{i}"),
                &["translate", "summarize"],
                1,
                now,
                3_600_000,
            )
        })
        .collect()
}
