//! The engine's message handling on arbitrary decoded messages, as requests from a peer and
//! as responses to its own exchanges: never a panic, never a record that does not verify, and
//! the records it held are still held.
#![no_main]

use std::sync::OnceLock;

use directory::Record;
use directory::sample::{keypair, population};
use gossip::wire::{self, MAX_MESSAGE_BYTES, Request, Response};
use gossip::{Config, Engine, Input, Output};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000_000;

fn seeded() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut e = Engine::new(keypair(1).public().to_peer_id(), Config::default(), 1);
        for r in population(10, 20, NOW - 1000) {
            e.handle(Input::Publish(r), NOW);
        }
        e.handle(Input::PeerDiscovered(keypair(2).public().to_peer_id()), NOW);
        e
    })
}

fuzz_target!(|data: &[u8]| {
    let mut e = seeded().clone();
    let before: Vec<Record> = e.store().iter().map(|r| (**r).clone()).collect();
    let from = keypair(2).public().to_peer_id();
    if let Ok(request) = wire::decode::<Request>(data, MAX_MESSAGE_BYTES) {
        e.handle(
            Input::Request {
                from,
                channel: 1,
                request,
            },
            NOW,
        );
    }
    if let Ok(response) = wire::decode::<Response>(data, MAX_MESSAGE_BYTES) {
        // Start an exchange so the response has somewhere to go, then answer it both ways.
        let outputs = e.handle(Input::SyncWith(from), NOW);
        for output in outputs {
            if let Output::Send { exchange, .. } = output {
                let followups = e.handle(
                    Input::Response {
                        exchange,
                        response: Response::Differ(NOW),
                    },
                    NOW,
                );
                e.handle(
                    Input::Response {
                        exchange,
                        response: response.clone(),
                    },
                    NOW,
                );
                for f in followups {
                    if let Output::Send { exchange, .. } = f {
                        e.handle(
                            Input::Response {
                                exchange,
                                response: response.clone(),
                            },
                            NOW,
                        );
                    }
                }
            }
        }
    }
    for r in e.store().iter() {
        assert!(r.verify_signature().is_ok());
    }
    for r in &before {
        assert!(
            e.store().get_by_id(&r.id()).is_some()
                || e.store().get(&r.key()).is_some_and(|h| h.seq() >= r.seq())
        );
    }
});
