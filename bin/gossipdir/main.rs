//! `gossipdir`: the command line. Each subcommand is a thin layer over the crates: parsing
//! arguments, printing results; the logic lives in `crates/`.

mod bench;
mod client;
mod demo;
mod node;
mod simulate;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "gossipdir",
    version,
    about = "A peer-to-peer directory of specialists, kept by push-pull gossip"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Bet 15 reproduced: convergence rounds of gossip dissemination over many seeded trials.
    Simulate(simulate::SimulateArgs),
    /// Measure the protocol: reconciliation cost (real engine and codec), latency against gossipsub.
    Bench {
        #[command(subcommand)]
        bench: bench::BenchCommand,
    },
    /// Run a node: libp2p swarm, gossip engine and local HTTP API, until SIGINT/SIGTERM.
    Node(node::NodeArgs),
    /// Write a new identity key file and print its PeerId.
    Keygen(node::KeygenArgs),
    /// Announce a specialist through a running node's API.
    Announce(client::AnnounceArgs),
    /// Withdraw a specialist announced through a running node's API.
    Withdraw(client::WithdrawArgs),
    /// Find specialists by capability through a running node's API.
    Query(client::QueryArgs),
    /// List the peers a running node knows.
    Peers(client::PeersArgs),
    /// Show a running node's status.
    Status(client::StatusArgs),
    /// Follow the records a running node merges, as it merges them.
    Watch(client::WatchArgs),
    /// Run N real nodes in one process on 127.0.0.1 and measure convergence.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Node(args) if node::wants_json_logs(args));
    // The demo runs many nodes in one process: only warnings unless RUST_LOG says otherwise.
    let default_filter = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        );
    if json_logs {
        fmt.json().init();
    } else {
        fmt.init();
    }
    match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Bench { bench } => bench::run(bench),
        Command::Node(args) => node::run(args),
        Command::Keygen(args) => node::keygen(args),
        Command::Announce(args) => client::announce(args),
        Command::Withdraw(args) => client::withdraw(args),
        Command::Query(args) => client::query(args),
        Command::Peers(args) => client::peers(args),
        Command::Status(args) => client::status(args),
        Command::Watch(args) => client::watch(args),
        Command::Demo(args) => demo::run(args),
    }
}
