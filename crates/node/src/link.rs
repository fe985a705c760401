//! Links: the sync protocol's requests and responses carried over one long-lived stream per
//! peer and direction (`/gossipdir/link/1.0.0`), instead of a new substream per request.
//!
//! A request over request-response costs a yamux substream, a multistream-select negotiation
//! and its close, both ways; news travels as bursts of small requests (a push and ⌈ln N⌉ + 3
//! id announcements per node, then the fetches), and at N = 50 in one process that machinery
//! made each message take 10–20 ms to cross under a burst, 0.7 ms when calm. A link opens one
//! stream to a connected peer and pipelines every request on it: each frame is the request
//! (or response) with its id, CBOR in the `gossip::wire` envelope, length-delimited and at
//! most the message limit (plus the id). The side that opened the link sends requests, the
//! other answers them on the same stream (all but one-way requests, [`ONE_WAY`]); the engine
//! sees the same requests and responses as over request-response, which stays for peers not
//! connected yet (it dials), peers with relayed connections only, peers that do not speak the
//! link protocol (request-response from then on), and anything a link cannot take.
//!
//! Bounds: one outbound and one inbound link per peer, at most [`MAX_LINKS`] inbound links,
//! [`LINK_QUEUE`] frames queued per link (a full queue sends the request over
//! request-response, or drops the response: the requester times out and reconciles later),
//! frames over the limit close the link. An outbound link with nothing in flight closes after
//! the connection idle timeout, so links do not keep connections open by themselves, except
//! the links to the overlay (with a view: the peers news goes to), kept ready for news as long
//! as their connection (see `EventLoop::tend_links`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use directory::PeerId;
use futures::{SinkExt, StreamExt};
use gossip::wire::{self, Request, Response};
use libp2p::{Stream, StreamProtocol};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::compat::{FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt};
use tracing::debug;

use crate::codec::ByteCounters;

/// Protocol id of links.
pub const LINK_PROTOCOL: StreamProtocol = StreamProtocol::new("/gossipdir/link/1.0.0");
/// The id of a one-way request: the serving side sends no answer (an id announcement, whose
/// answer would tell the requester nothing it acts on). Request ids count up from 0 and never
/// reach it; an older peer that answers it anyway answers no request of ours.
pub const ONE_WAY: u64 = u64::MAX;
/// Frames queued for one link, each way.
pub const LINK_QUEUE: usize = 64;
/// Most inbound links at once (one per peer).
pub const MAX_LINKS: usize = 1024;
/// Link events waiting for the event loop (link tasks wait when it is behind).
pub const EVENT_QUEUE: usize = 1024;
/// Bytes a frame may add to a message: the request id and the pair around it.
const FRAME_OVERHEAD: usize = 16;
/// How long closing a link may wait for its last frames to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Identifies one link for as long as the node runs.
pub type LinkId = u64;

/// What link tasks tell the event loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// A peer opened a link to us: to be accepted with [`spawn_inbound`] or dropped.
    Incoming { peer: PeerId, stream: Stream },
    /// A request on inbound link `link`, answered with its `id`.
    Request {
        peer: PeerId,
        link: LinkId,
        id: u64,
        request: Request,
    },
    /// The answer to request `id` of our outbound link `link`.
    Response {
        peer: PeerId,
        link: LinkId,
        id: u64,
        response: Response,
    },
    /// The link ended (closed by either side, broken, or never opened). `unsupported`: the
    /// peer does not speak the link protocol (request-response with it from then on); a link
    /// that could not be opened for another reason (its connection closed meanwhile, a
    /// timeout) is tried again by the next request. Requests in flight on it will not be
    /// answered.
    Closed {
        peer: PeerId,
        link: LinkId,
        unsupported: bool,
    },
}

/// What a link task needs besides its stream.
#[derive(Clone)]
pub struct LinkContext {
    pub events: mpsc::Sender<LinkEvent>,
    /// Largest sync message, as for request-response.
    pub limit: usize,
    pub bytes: Arc<ByteCounters>,
}

/// Opens a link to `peer` (connected, or the swarm dials it) and sends what `requests`
/// yields on it, reporting responses and the end as [`LinkEvent`]s.
pub fn spawn_outbound(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    link: LinkId,
    open_timeout: Duration,
    requests: mpsc::Receiver<(u64, Request)>,
    cx: LinkContext,
) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let opening = tokio::time::timeout(open_timeout, control.open_stream(peer, LINK_PROTOCOL));
        let stream = match opening.await {
            Ok(Ok(stream)) => {
                debug!(%peer, took = ?started.elapsed(), "link opened");
                stream
            }
            failed => {
                let unsupported = matches!(
                    failed,
                    Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)))
                );
                match failed {
                    Ok(Err(e)) => debug!(%peer, "cannot open a link: {e}"),
                    _ => debug!(%peer, "opening a link timed out"),
                }
                closed(peer, link, unsupported, &cx).await;
                return;
            }
        };
        let to_event = move |id, response| LinkEvent::Response {
            peer,
            link,
            id,
            response,
        };
        run(stream, requests, &cx, to_event).await;
        closed(peer, link, false, &cx).await;
    });
}

/// Serves a link `peer` opened: its requests become [`LinkEvent::Request`]s, the answers
/// `responses` yields are written back.
pub fn spawn_inbound(
    stream: Stream,
    peer: PeerId,
    link: LinkId,
    responses: mpsc::Receiver<(u64, Response)>,
    cx: LinkContext,
) {
    tokio::spawn(async move {
        let to_event = move |id, request| LinkEvent::Request {
            peer,
            link,
            id,
            request,
        };
        run(stream, responses, &cx, to_event).await;
        closed(peer, link, false, &cx).await;
    });
}

/// Tells the event loop that a link has ended (`unsupported`: see [`LinkEvent::Closed`]).
async fn closed(peer: PeerId, link: LinkId, unsupported: bool, cx: &LinkContext) {
    let end = LinkEvent::Closed {
        peer,
        link,
        unsupported,
    };
    let _ = cx.events.send(end).await;
}

/// The codec of link frames: a 4-byte length, then at most the message limit plus the id.
fn frames(limit: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(limit + FRAME_OVERHEAD)
        .new_codec()
}

/// Writes what `outgoing` yields and reads the other direction until either ends, a frame
/// breaks the rules, or the stream fails.
async fn run<Out, In>(
    stream: Stream,
    mut outgoing: mpsc::Receiver<(u64, Out)>,
    cx: &LinkContext,
    to_event: impl Fn(u64, In) -> LinkEvent,
) where
    Out: Serialize,
    In: DeserializeOwned,
{
    let (read, write) = futures::AsyncReadExt::split(stream);
    let mut incoming = FramedRead::new(read.compat(), frames(cx.limit));
    let mut sink = FramedWrite::new(write.compat_write(), frames(cx.limit));
    loop {
        tokio::select! {
            next = outgoing.recv() => {
                let Some((id, message)) = next else { break };
                let bytes = wire::encode(&(id, message));
                if bytes.len() > cx.limit + FRAME_OVERHEAD {
                    debug!(len = bytes.len(), "link frame over the limit, not sent");
                    continue;
                }
                cx.bytes.outbound.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if let Err(e) = sink.send(Bytes::from(bytes)).await {
                    debug!("link write failed: {e}");
                    break;
                }
            }
            frame = incoming.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        debug!("link read failed: {e}");
                        break;
                    }
                    None => break,
                };
                cx.bytes.inbound.fetch_add(frame.len() as u64, Ordering::Relaxed);
                let (id, message) = match wire::decode::<(u64, In)>(&frame, cx.limit + FRAME_OVERHEAD) {
                    Ok(m) => m,
                    Err(e) => {
                        debug!("malformed link frame, closing the link: {e}");
                        break;
                    }
                };
                if cx.events.send(to_event(id, message)).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, SinkExt::<Bytes>::close(&mut sink)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        let mut codec = frames(64);
        let mut buf = bytes::BytesMut::from(&(1u32 << 20).to_be_bytes()[..]);
        buf.extend_from_slice(&[0u8; 8]);
        assert!(codec.decode(&mut buf).is_err());
        let mut ok = bytes::BytesMut::from(&3u32.to_be_bytes()[..]);
        ok.extend_from_slice(b"abc");
        assert_eq!(codec.decode(&mut ok).unwrap().as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn frames_carry_the_id_and_the_message_in_the_wire_envelope() {
        let request = Request::Have(vec![serde_bytes::ByteBuf::from(vec![7u8; 8])]);
        let bytes = wire::encode(&(42u64, request.clone()));
        let back: (u64, Request) = wire::decode(&bytes, 64 + FRAME_OVERHEAD).unwrap();
        assert_eq!(back, (42, request));
        assert!(wire::decode::<(u64, Response)>(&bytes, 64 + FRAME_OVERHEAD).is_err());
    }
}
