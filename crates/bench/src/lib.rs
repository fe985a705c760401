//! Real-stack benchmarks of gossipdir (issue 8): how fast a new record reaches every node, and
//! how many bytes each node receives for it, against libp2p gossipsub on the same transport;
//! and ([`api_load`]) how a node's local HTTP API answers a fixed rate of queries while it
//! gossips a directory of 10,000 records; and ([`compare`]) gossipdir side by side with the
//! founding full-view design, chitchat and gossipsub in one run (issue 6).
//!
//! Everything runs in one process on 127.0.0.1 over TCP + noise + yamux:
//! - [`gossipdir`]: N real [`node::Node`]s (mDNS off, 1 s rounds, default push fanout).
//! - [`gossipsub`]: N libp2p gossipsub swarms (default config: D = 6, 1 s heartbeat), one topic.
//!
//! Three byte counts are taken per node over each measurement window (see [`Bytes`]):
//! the sync codec's payload bytes (gossipdir only), libp2p's bandwidth counters (bytes of every
//! substream: multistream-select, identify, ping, kad, sync, gossipsub; noise and yamux framing
//! excluded), and `bytes_received` of every TCP socket of the process (`ss -tinp`: TCP payload,
//! noise and yamux framing included; divided by N). Each trial's window is preceded by an idle
//! window of the same length, subtracted as the baseline.

pub mod api_load;
pub mod chitchat_net;
pub mod compare;
pub mod compare_plot;
pub mod fullview;
pub mod gossipdir;
pub mod gossipsub;
pub mod latency;
pub mod memory;

pub use api_load::{ApiArgs, ApiReport, api_load, run_api};
pub use compare::{CompareArgs, CompareReport, compare, run_compare};
pub use latency::{LatencyArgs, run_latency};
