//! Accepting the connections of both gRPC servers (clients and peers).
//!
//! tonic's `tcp_nodelay` applies only to listeners tonic binds itself; the
//! node binds its own (so a port is known, and held, before the servers
//! start), so Nagle's algorithm is turned off here on every accepted
//! socket. Without it a response that fits in one small segment waits for
//! the client's delayed ACK: about 40 ms on each `Status`, `GetBlock` or
//! `GetTransaction` of a long-lived connection, and on every `GetBlocks`
//! batch of a state transfer.

use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

/// HTTP/2 streams one connection may hold open at once on either server
/// (the `SETTINGS_MAX_CONCURRENT_STREAMS` each server announces). Requests
/// in progress are bounded separately
/// ([`crate::node_state::reads::MAX_REQUESTS_PER_CONNECTION`]); this bounds the
/// `Subscribe` and `GetBlocks` streams a client keeps open, each of which
/// holds a task and a bounded buffer.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// The accepted sockets of `listener`, each with `TCP_NODELAY` set. A
/// socket whose option cannot be set is dropped with a warning; accepting
/// goes on.
pub fn accept(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).filter_map(|accepted| async move {
        match accepted {
            Ok(socket) => match socket.set_nodelay(true) {
                Ok(()) => Some(Ok(socket)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set TCP_NODELAY; connection dropped");
                    None
                }
            },
            Err(e) => Some(Err(e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut incoming = Box::pin(accept(listener));
        let _client = TcpStream::connect(addr).await.expect("connect");
        let socket = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(socket.nodelay().expect("read TCP_NODELAY"));
    }
}
