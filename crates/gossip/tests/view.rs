//! The partial view: a node's rounds go to a bounded, stable set of members however many it
//! knows, a failed member is replaced, and rotation still reaches outside the view.

use std::collections::HashSet;

use directory::PeerId;
use directory::sample::keypair;
use gossipdir_gossip::wire::Request;
use gossipdir_gossip::{Config, Engine, Input, Output};

const NOW: u64 = 1_800_000_000_000;
const PEERS: u64 = 200;

/// At most `fanout` exchanges in flight: each round abandons the last round's (which are
/// never answered here) rather than waiting for them.
fn engine(view_size: usize, rotation: u32) -> Engine {
    knowing_every_peer(Config {
        view_size,
        view_rotation_rounds: rotation,
        max_exchanges: Config::default().fanout,
        ..Config::default()
    })
}

/// An engine with `config` that knows all `PEERS` peers.
fn knowing_every_peer(config: Config) -> Engine {
    let mut e = Engine::new(keypair(1).public().to_peer_id(), config, 7);
    for i in 0..PEERS {
        let peer = keypair(100 + i).public().to_peer_id();
        e.handle(Input::PeerDiscovered(peer), NOW);
    }
    e
}

/// The peers that `rounds` ticks start exchanges with (at one instant: nothing times out, the
/// oldest unanswered exchanges are abandoned to make room).
fn round_targets(e: &mut Engine, rounds: usize) -> Vec<PeerId> {
    let mut targets = Vec::new();
    for _ in 0..rounds {
        for out in e.handle(Input::Tick, NOW) {
            if let Output::Send { to, .. } = out {
                targets.push(to);
            }
        }
    }
    targets
}

#[test]
fn without_a_view_rounds_spread_over_every_member() {
    let mut e = engine(0, 0);
    let distinct: HashSet<PeerId> = round_targets(&mut e, 200).into_iter().collect();
    assert!(e.view().is_empty());
    assert!(distinct.len() > 100, "{} distinct peers", distinct.len());
}

#[test]
fn with_a_view_rounds_go_only_to_its_members() {
    let mut e = engine(8, 0);
    let targets = round_targets(&mut e, 200);
    let view: HashSet<PeerId> = e.view().iter().copied().collect();
    assert_eq!(view.len(), 8);
    assert_eq!(targets.len(), 400, "fanout 2 every round");
    assert!(targets.iter().all(|t| view.contains(t)));
    let distinct: HashSet<PeerId> = targets.into_iter().collect();
    assert_eq!(distinct, view, "every member of the view is used");
}

#[test]
fn rotation_reaches_outside_the_view_about_once_per_rotation_period() {
    let mut e = engine(8, 4);
    let targets = round_targets(&mut e, 400);
    let view: HashSet<PeerId> = e.view().iter().copied().collect();
    let outside = targets.iter().filter(|t| !view.contains(t)).count();
    // One exchange in a round with probability 1/4: ~100 of 800.
    assert!(
        (50..=150).contains(&outside),
        "{outside} of {}",
        targets.len()
    );
}

#[test]
fn the_view_does_not_depend_on_the_order_peers_were_learnt() {
    let a = engine(8, 0);
    let config = Config {
        view_size: 8,
        view_rotation_rounds: 0,
        ..Config::default()
    };
    let mut b = Engine::new(keypair(1).public().to_peer_id(), config, 7);
    for i in (0..PEERS).rev() {
        b.handle(
            Input::PeerDiscovered(keypair(100 + i).public().to_peer_id()),
            NOW,
        );
    }
    let (mut a, mut b) = (a, b);
    round_targets(&mut a, 1);
    round_targets(&mut b, 1);
    let view = |e: &Engine| e.view().iter().copied().collect::<HashSet<PeerId>>();
    assert_eq!(view(&a), view(&b));
}

#[test]
fn a_member_whose_exchange_failed_is_replaced_for_a_while() {
    let mut e = engine(8, 0);
    let out = e.handle(Input::Tick, NOW);
    let before: HashSet<PeerId> = e.view().iter().copied().collect();
    let Some((exchange, failed)) = out.iter().find_map(|o| match o {
        Output::Send { to, exchange, .. } => Some((*exchange, *to)),
        _ => None,
    }) else {
        panic!("a round starts an exchange");
    };
    e.handle(Input::Failed { exchange }, NOW);
    let suspect_rounds = Config::default().view_suspect_rounds as usize;
    let targets = round_targets(&mut e, suspect_rounds - 1);
    let after: HashSet<PeerId> = e.view().iter().copied().collect();
    assert_eq!(after.len(), 8);
    assert!(!after.contains(&failed));
    assert!(!targets.contains(&failed));
    assert_eq!(
        before.intersection(&after).count(),
        7,
        "only the failed member changed"
    );
    // The suspicion ends: the member is back at a later recomputation.
    round_targets(&mut e, 2 * suspect_rounds);
    let later: HashSet<PeerId> = e.view().iter().copied().collect();
    assert_eq!(later, before);
}

#[test]
fn news_goes_to_view_members_even_when_others_are_connected() {
    let config = Config {
        view_size: 8,
        ..Config::default()
    };
    let mut e = knowing_every_peer(config);
    let first = directory::sample::node(&keypair(4), 1, NOW - 1000, 60_000);
    e.handle(Input::Publish(first), NOW);
    let view: HashSet<PeerId> = e.view().iter().copied().collect();
    for i in 0..PEERS {
        let peer = keypair(100 + i).public().to_peer_id();
        if !view.contains(&peer) {
            e.handle(Input::Connected(peer), NOW);
        }
    }
    let record = directory::sample::node(&keypair(5), 1, NOW - 1000, 60_000);
    let targets: Vec<PeerId> = e
        .handle(Input::Publish(record), NOW)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert!(!targets.is_empty());
    assert!(targets.iter().all(|t| view.contains(t)), "{targets:?}");
}

/// A member that reconciles with this node holds it in its view: news goes to it as well as
/// to the view, so that a node few views hold (in a k-out overlay, e⁻ᵏ of them are in none)
/// still hears at once. A stranger's request does not make it one.
#[test]
fn news_also_goes_to_members_whose_view_holds_this_node() {
    let config = Config {
        view_size: 4,
        announce_fanout: Some(16),
        ..Config::default()
    };
    let mut e = knowing_every_peer(config);
    let publish = |e: &mut Engine, key: u64| -> HashSet<PeerId> {
        let record = directory::sample::node(&keypair(key), 1, NOW - 1000, 60_000);
        e.handle(Input::Publish(record), NOW)
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, .. } | Output::Notify { to, .. } => Some(to),
                _ => None,
            })
            .collect()
    };
    let before = publish(&mut e, 4);
    let view: HashSet<PeerId> = e.view().iter().copied().collect();
    assert_eq!(before, view);
    let outside = (0..PEERS)
        .map(|i| keypair(100 + i).public().to_peer_id())
        .find(|p| !view.contains(p))
        .unwrap();
    let stranger = PeerId::random();
    for from in [outside, stranger] {
        let summary = Request::Summary(0, serde_bytes::ByteBuf::from(vec![0u8; 32]));
        e.handle(
            Input::Request {
                from,
                channel: 1,
                request: summary,
            },
            NOW,
        );
    }
    let after = publish(&mut e, 5);
    let mut expected = view.clone();
    expected.insert(outside);
    assert_eq!(after, expected);
}

/// Members joining a full view's membership change it at the next round, not at each join
/// (ranking every member on each change was a large share of a forming federation's CPU):
/// until then it stays as it was; afterwards it is what a node that knew everyone from the
/// start has.
#[test]
fn a_full_view_follows_a_growing_membership_once_a_round() {
    let mut e = engine(4, 0);
    round_targets(&mut e, 1);
    let before: HashSet<PeerId> = e.view().iter().copied().collect();
    let newcomers: Vec<PeerId> = (0..1000)
        .map(|i| keypair(10_000 + i).public().to_peer_id())
        .collect();
    for (i, peer) in newcomers.iter().enumerate() {
        e.handle(Input::PeerDiscovered(*peer), NOW);
        // News each time: its peers are picked from the view.
        let owner = keypair(20_000 + i as u64);
        let record = directory::sample::specialist(&owner, "ocr", &["ocr"], 1, NOW - 1000, 60_000);
        e.handle(Input::Publish(record), NOW);
    }
    let within: HashSet<PeerId> = e.view().iter().copied().collect();
    assert_eq!(within, before, "the same round");
    round_targets(&mut e, 1);
    let after: HashSet<PeerId> = e.view().iter().copied().collect();
    let mut fresh = engine(4, 0);
    for peer in &newcomers {
        fresh.handle(Input::PeerDiscovered(*peer), NOW);
    }
    round_targets(&mut fresh, 1);
    let expected: HashSet<PeerId> = fresh.view().iter().copied().collect();
    assert_eq!(after, expected);
    assert_ne!(
        after, before,
        "newcomers rank first in most views of 4 among 1,200"
    );
}
