//! Writes the fuzzers' seed corpus (real records and messages) under a directory:
//! `cargo run -p gossipdir-gossip --example fuzz_seeds -- fuzz/corpus`.

use std::fs;
use std::path::Path;

use directory::sample::{keypair, node, population};
use gossipdir_gossip::pair::differing;
use gossipdir_gossip::wire::{self, Request, Response};
use gossipdir_gossip::{Input, Output};

const NOW: u64 = 1_800_000_000_000;

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let root = Path::new(&root);
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)
    };
    let records = population(0, 3, NOW - 1000);
    write("record_decode", "specialist", &records[0].encode())?;
    write(
        "record_decode",
        "node",
        &node(&keypair(9), 1, NOW - 1000, 60_000).encode(),
    )?;

    // A real exchange between two engines: every message it sends is a seed.
    let (mut a, mut b) = differing(50, 6, NOW);
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let mut queue = a.handle(Input::SyncWith(b.local_peer()), NOW);
    let mut n = 0;
    while let Some(out) = queue.pop() {
        let Output::Send {
            exchange, request, ..
        } = out
        else {
            continue;
        };
        n += 1;
        messages.push((format!("request-{n}"), wire::encode(&request)));
        for reply in b.handle(
            Input::Request {
                from: a.local_peer(),
                channel: n,
                request,
            },
            NOW,
        ) {
            if let Output::Respond { response, .. } = reply {
                messages.push((format!("response-{n}"), wire::encode(&response)));
                queue.extend(a.handle(Input::Response { exchange, response }, NOW));
            }
        }
    }
    messages.push((
        "push".into(),
        wire::encode(&Request::Push(records.iter().map(|r| r.to_raw()).collect())),
    ));
    messages.push(("ack".into(), wire::encode(&Response::PushAck(3))));
    messages.push((
        "refused".into(),
        wire::encode(&Response::Refused("busy".into())),
    ));
    for (name, bytes) in &messages {
        write("wire_decode", name, bytes)?;
        write("engine_handle", name, bytes)?;
    }
    println!(
        "wrote {} seeds under {}",
        messages.len() * 2 + 2,
        root.display()
    );
    Ok(())
}
