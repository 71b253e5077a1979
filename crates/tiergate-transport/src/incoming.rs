//! The gRPC port's accepted connections.

use std::io;

use tokio::net::{TcpListener, TcpStream};
use tonic::codegen::tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::TcpIncoming;

use crate::{Coalesced, Holding};

/// The connections `listener` accepts, each socket without Nagle's algorithm (`TCP_NODELAY`),
/// as `tonic`'s own `Server::serve` would set them (`serve_with_incoming` leaves sockets as
/// accepted), and its writes [`Coalesced`]. With Nagle, a response written in two parts waits
/// for the client's delayed ACK (up to 40 ms on Linux) whenever the connection is not busy
/// enough to coalesce writes. Measured with `tiergate loadgen --orgs 1000 --batch 100
/// --concurrency 1` on the memory store: 44 ms per batch with Nagle, 0.75 ms without.
///
/// With `holding`, each connection holds its calls' answers back until the facts they
/// acknowledge are durable in its store ([`crate::hold`]).
pub fn incoming(
    listener: TcpListener,
    holding: Option<Holding>,
) -> impl Stream<Item = io::Result<Coalesced<TcpStream>>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |conn| {
            conn.map(|c| match &holding {
                Some(h) => {
                    let peer = c.peer_addr().ok();
                    Coalesced::holding(c, h.clone()).with_peer(peer)
                }
                None => Coalesced::new(c),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_send_without_delay_and_coalesced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(incoming(listener, None));
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted: Coalesced<TcpStream> = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.get_ref().nodelay().unwrap(),
            "an accepted socket keeps Nagle's algorithm"
        );
    }

    /// A connection that holds answers knows whom it holds them for, so that a stalled
    /// store's warning and error can name it.
    #[tokio::test]
    async fn a_holding_connection_knows_its_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holding = Holding {
            durable: std::sync::Arc::new(crate::hold::TestLog::default()),
            stall_limit: None,
        };
        let mut incoming = std::pin::pin!(incoming(listener, Some(holding)));
        let client = TcpStream::connect(addr).await.unwrap();
        let accepted: Coalesced<TcpStream> = incoming.next().await.unwrap().unwrap();
        assert_eq!(accepted.peer(), Some(client.local_addr().unwrap()));
    }
}
