//! Lingering close, as nginx does it: closing a socket that still has unread input makes the
//! kernel send a reset, and a client still writing its body (say, one we answered 413) loses
//! the answer with it. So first half-close (FIN), then read and discard what the client still
//! sends, for a bounded time, and only then close.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// Bounds of a lingering close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// The longest a socket lingers in all.
    pub total: Duration,
    /// Closed as soon as the client has sent nothing for this long.
    pub quiet: Duration,
}

/// Bytes read per discarding `read`.
const SINK: usize = 16 * 1024;

impl Linger {
    pub const DEFAULT: Linger = Linger { total: Duration::from_secs(3), quiet: Duration::from_secs(1) };

    /// Half-closes `stream`, discards input until the client closes, falls quiet for `quiet`,
    /// or `total` has passed, then closes it.
    ///
    /// The discard buffer is on the heap and only while lingering: this future is part of every
    /// connection task from its start, and a buffer held in it (it was a 16 KiB array) made
    /// every open connection that much larger, lingering or not (docs/overload.md, seventh
    /// session: 16 MiB of the 1,000-connection peak).
    pub async fn close(self, mut stream: TcpStream) {
        if stream.shutdown().await.is_err() {
            return;
        }
        let end = Instant::now() + self.total;
        let mut sink = vec![0u8; SINK];
        loop {
            let until = (Instant::now() + self.quiet).min(end);
            match timeout_at(until, stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    const SHORT: Linger = Linger { total: Duration::from_secs(5), quiet: Duration::from_millis(200) };

    /// A connected pair; the client's small send buffer keeps it writing while the server closes.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
        let client = socket.connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn a_client_still_writing_gets_everything_the_server_sent_and_no_reset() {
        let (mut client, mut server) = pair().await;
        server.write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n").await.expect("answer");
        let lingering = tokio::spawn(SHORT.close(server));
        let body = vec![b'x'; 4 * 1024 * 1024];
        client.write_all(&body).await.expect("the whole body is accepted, never reset");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("the answer, then a clean end");
        assert!(answer.starts_with(b"HTTP/1.1 413"));
        drop(client);
        lingering.await.expect("linger ends once the client has gone");
    }

    #[tokio::test]
    async fn a_client_that_never_closes_is_dropped_once_quiet() {
        let (mut client, server) = pair().await;
        tokio::time::timeout(Duration::from_secs(10), SHORT.close(server)).await.expect("bounded by `quiet`");
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }
}
