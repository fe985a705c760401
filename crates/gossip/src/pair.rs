//! Two engines exchanging through the real codec, in memory: for tests and benchmarks that
//! want the protocol's true message sizes without a network.

use directory::Limits;
use directory::sample::{keypair, population};

use crate::engine::{Config, Engine, Input, Output};
use crate::wire::{self, DecodeError, Request, Response};

/// What one exchange cost, seen from the engine that started it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Encoded request bytes, starter to answerer.
    pub bytes_sent: u64,
    /// Encoded response bytes, answerer to starter.
    pub bytes_received: u64,
    /// Requests plus responses.
    pub messages: u64,
    /// Request/response pairs.
    pub round_trips: u64,
}

/// Runs one exchange started by `a` with `b` to its end, every message encoded and decoded
/// with the wire codec at its byte limit. Messages either side addresses to any third peer
/// (rumor pushes) are dropped.
pub fn exchange(a: &mut Engine, b: &mut Engine, now: u64) -> Result<Transfer, DecodeError> {
    exchange_at(a, now, b, now)
}

/// [`exchange`] between two nodes whose clocks disagree: `a` reads `now_a`, `b` reads `now_b`
/// (the message takes no time).
pub fn exchange_at(
    a: &mut Engine,
    now_a: u64,
    b: &mut Engine,
    now_b: u64,
) -> Result<Transfer, DecodeError> {
    let limit_a = a.config().max_message_bytes;
    let limit_b = b.config().max_message_bytes;
    let (a_id, b_id) = (a.local_peer(), b.local_peer());
    let mut transfer = Transfer::default();
    let mut queue: Vec<Output> = a.handle(Input::SyncWith(b_id), now_a);
    let mut next_channel = 0;
    while let Some(output) = queue.pop() {
        let Output::Send {
            to,
            exchange,
            request,
        } = output
        else {
            continue;
        };
        if to != b_id {
            continue;
        }
        let bytes = wire::encode(&request);
        transfer.bytes_sent += bytes.len() as u64;
        let request: Request = wire::decode(&bytes, limit_b)?;
        next_channel += 1;
        let outputs = b.handle(
            Input::Request {
                from: a_id,
                channel: next_channel,
                request,
            },
            now_b,
        );
        for output in outputs {
            if let Output::Respond { response, .. } = output {
                let bytes = wire::encode(&response);
                transfer.bytes_received += bytes.len() as u64;
                transfer.messages += 2;
                transfer.round_trips += 1;
                let response: Response = wire::decode(&bytes, limit_a)?;
                queue.extend(a.handle(Input::Response { exchange, response }, now_a));
            }
        }
    }
    Ok(transfer)
}

/// Two engines whose directories hold `records` records each and differ in `diff` of them
/// (half of the differing records only on the first, half only on the second), with rumor
/// pushes off so that only reconciliation moves records. Records are issued at `now - 1000`.
pub fn differing(records: u64, diff: u64, now: u64) -> (Engine, Engine) {
    let diff = diff.min(2 * records);
    let only_a = diff.div_ceil(2);
    let only_b = diff / 2;
    let shared = records - only_a.max(only_b);
    let all = population(0, shared + only_a + only_b, now - 1000);
    let config = Config {
        push_fanout: 0,
        limits: Limits {
            // Room for the union of both sides.
            max_records: ((records + diff) as usize + 1).max(Limits::default().max_records),
            ..Limits::default()
        },
        ..Config::default()
    };
    let make = |n: u64, picked: &mut dyn Iterator<Item = &directory::Record>| {
        let mut e = Engine::new(
            keypair(u64::MAX - n).public().to_peer_id(),
            config.clone(),
            n,
        );
        for r in picked {
            e.handle(Input::Publish(r.clone()), now);
        }
        e
    };
    let s = shared as usize;
    let a = make(1, &mut all[..s].iter().chain(&all[s..s + only_a as usize]));
    let b = make(2, &mut all[..s].iter().chain(&all[s + only_a as usize..]));
    (a, b)
}
