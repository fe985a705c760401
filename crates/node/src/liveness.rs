//! libp2p ping on the connections that need it to notice a dead peer: TCP and relayed ones.
//!
//! A direct QUIC connection checks itself: its keep-alive packets (every 5 s by libp2p's
//! default) and idle timeout (10 s) close it when the peer stops answering. Pinging it too
//! (a substream and a timer per connection, a round trip every 15 s) found nothing the
//! transport had not found already, and with 1,000 nodes in one process it was almost half
//! the CPU of an idle federation (0.094 % of a core per node with it, 0.050 % without, after
//! 240 s of `demo --transport quic --view-size 4`). A TCP connection (whose keep-alives
//! take hours) and a relayed circuit (a stream over the relay's connection, which stays up
//! when the far peer dies) still get pinged, and a ping timeout closes them (see the event
//! loop).

use std::convert::Infallible;
use std::task::{Context, Poll};

use either::Either;
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::ping;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// [`ping::Behaviour`] on connections that are not direct QUIC ones, nothing on the rest.
pub struct Liveness {
    ping: ping::Behaviour,
}

impl Liveness {
    pub fn new(config: ping::Config) -> Self {
        Self {
            ping: ping::Behaviour::new(config),
        }
    }
}

/// Whether a connection over these addresses is a direct QUIC one, which checks its peer's
/// liveness by itself.
pub fn checks_itself(addresses: &[&Multiaddr]) -> bool {
    let has = |p: fn(&Protocol) -> bool| addresses.iter().any(|a| a.iter().any(|c| p(&c)));
    has(|c| matches!(c, Protocol::QuicV1)) && !has(|c| matches!(c, Protocol::P2pCircuit))
}

type PingHandler = THandler<ping::Behaviour>;

impl NetworkBehaviour for Liveness {
    type ConnectionHandler = Either<PingHandler, dummy::ConnectionHandler>;
    type ToSwarm = ping::Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if checks_itself(&[local_addr, remote_addr]) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.ping
            .handle_established_inbound_connection(connection, peer, local_addr, remote_addr)
            .map(Either::Left)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if checks_itself(&[addr]) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.ping
            .handle_established_outbound_connection(connection, peer, addr, role_override, port_use)
            .map(Either::Left)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.ping.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => self
                .ping
                .on_connection_handler_event(peer, connection, event),
            Either::Right(never) => match never {},
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<ping::Event, THandlerInEvent<Self>>> {
        self.ping
            .poll(cx)
            .map(|action| action.map_in(|never: Infallible| match never {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_direct_quic_connections_go_unpinged() {
        let quic = addr("/ip4/10.0.0.1/udp/4001/quic-v1");
        let tcp = addr("/ip4/10.0.0.1/tcp/4001");
        let relayed = addr(
            "/ip4/10.0.0.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        );
        assert!(checks_itself(&[&quic]));
        assert!(checks_itself(&[&quic, &quic]));
        assert!(!checks_itself(&[&tcp]));
        assert!(!checks_itself(&[&relayed]));
        // An inbound circuit: the local address names the circuit, the remote one does not.
        assert!(!checks_itself(&[&relayed, &quic]));
    }
}
