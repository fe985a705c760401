//! The gossip engine of gossipdir: a sans-IO state machine that reconciles a node's
//! directory with random peers (push-pull, Negentropy range reconciliation) and pushes news
//! on at once, plus the wire format it speaks. It knows nothing of sockets or async runtimes.
//!
//! - [`engine`]: `Engine::handle(input, now) -> outputs`.
//! - [`clock`]: network-adjusted time (median offset of sampled peers, clamped).
//! - [`wire`]: the request/response messages and their CBOR codec with byte limits.
//! - [`pair`]: two engines exchanging through the real codec in memory (tests, benches).

pub mod clock;
pub mod engine;
pub mod pair;
pub mod wire;

pub use clock::{ClockConfig, NetworkClock};
pub use engine::{ChannelId, Config, Engine, EngineStats, ExchangeId, Input, Output};
pub use wire::{DecodeError, Request, Response};
