//! Why a node could not start, or could not read or write its files.

use std::net::SocketAddr;
use std::path::PathBuf;

use directory::Multiaddr;

/// A node start-up or file error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {0} is damaged (not a protobuf-encoded libp2p key); refusing to replace it")]
    KeyDamaged(PathBuf),
    #[error("cannot encode the key: {0}")]
    KeyEncoding(String),
    #[error("issuer state {0} is damaged")]
    StateDamaged(PathBuf),
    #[error("cannot build the transports: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("{what} address {addr} does not end in /p2p/<peer id>")]
    MissingPeerId { what: &'static str, addr: Multiaddr },
    #[error("cannot bind the API on {addr}: {source}")]
    ApiBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the API on {0} would be reachable beyond this machine: \
         give an API token (--api-token) or bind it to loopback"
    )]
    ApiWithoutToken(SocketAddr),
}

impl StartError {
    /// An I/O error on a file, with what the file is.
    pub(crate) fn file(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StartError {
        let path = path.into();
        move |source| StartError::File { what, path, source }
    }
}
