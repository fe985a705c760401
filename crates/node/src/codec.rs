//! The `/gossipdir/sync/1.0.0` request-response codec: one CBOR message per stream direction
//! (`gossip::wire`), read up to end of stream with a hard byte limit in both directions.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::prelude::*;
use gossip::wire::{self, Request, Response};
use libp2p::StreamProtocol;
use libp2p::request_response;

/// Protocol id of the gossip exchanges.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/gossipdir/sync/1.0.0");

/// Bytes read and written by the codec (all streams), for metrics.
#[derive(Debug, Default)]
pub struct ByteCounters {
    pub inbound: AtomicU64,
    pub outbound: AtomicU64,
}

/// CBOR codec over `gossip::wire` with a byte limit on every message.
#[derive(Debug, Clone)]
pub struct SyncCodec {
    limit: usize,
    bytes: Arc<ByteCounters>,
}

impl SyncCodec {
    pub fn new(limit: usize, bytes: Arc<ByteCounters>) -> Self {
        Self { limit, bytes }
    }

    async fn read_message<T, M>(&self, io: &mut T) -> io::Result<M>
    where
        T: AsyncRead + Unpin + Send,
        M: serde::de::DeserializeOwned,
    {
        let mut buf = Vec::new();
        // One byte more than the limit tells "exactly at the limit" from "over it".
        (&mut *io)
            .take(self.limit as u64 + 1)
            .read_to_end(&mut buf)
            .await?;
        self.bytes
            .inbound
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        if buf.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message over the limit of {} bytes", self.limit),
            ));
        }
        wire::decode(&buf, self.limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn write_message<T, M>(&self, io: &mut T, message: &M) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
        M: serde::Serialize,
    {
        let bytes = wire::encode(message);
        if bytes.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {} bytes over the limit of {}",
                    bytes.len(),
                    self.limit
                ),
            ));
        }
        io.write_all(&bytes).await?;
        io.flush().await?;
        self.bytes
            .outbound
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_message(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_message(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_message(io, &response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    #[tokio::test]
    async fn round_trip_and_limit() {
        let counters = Arc::new(ByteCounters::default());
        let mut codec = SyncCodec::new(64, counters.clone());
        let mut buf = Vec::new();
        let request = Request::Push(Vec::new());
        codec
            .write_request(
                &SYNC_PROTOCOL,
                &mut futures::io::Cursor::new(&mut buf),
                request.clone(),
            )
            .await
            .unwrap();
        let back = codec
            .read_request(&SYNC_PROTOCOL, &mut futures::io::Cursor::new(&buf))
            .await
            .unwrap();
        assert_eq!(back, request);
        let big = vec![0u8; 65];
        let err = codec
            .read_request(&SYNC_PROTOCOL, &mut futures::io::Cursor::new(&big))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let junk = vec![0xffu8; 10];
        assert!(
            codec
                .read_response(&SYNC_PROTOCOL, &mut futures::io::Cursor::new(&junk))
                .await
                .is_err()
        );
    }
}
