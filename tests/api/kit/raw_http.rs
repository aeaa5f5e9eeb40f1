//! Bytes on a socket, for what reqwest would refuse or tidy: a bare HTTP/1.1 client over one
//! keep-alive connection (invented methods, invalid UTF-8, odd framing), and the half-sent
//! requests of slow or broken clients.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::TestApp;

/// One response: status, head (status line and headers, lower-cased names kept as sent), body.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

pub struct RawConnection {
    stream: BufReader<TcpStream>,
}

impl RawConnection {
    pub async fn open(app: &TestApp) -> Self {
        Self::to(app.addr).await
    }

    pub async fn to(addr: std::net::SocketAddr) -> Self {
        Self { stream: BufReader::new(TcpStream::connect(addr).await.expect("connect")) }
    }

    /// Sends `head` (request line and any headers, no blank line) with an empty body.
    pub async fn send(&mut self, head: &str) -> RawResponse {
        self.send_bytes(format!("{head}\r\nHost: test\r\nContent-Length: 0\r\n\r\n").as_bytes()).await
    }

    /// Sends `request` verbatim and reads one response (bounded, so a hang fails the test).
    pub async fn send_bytes(&mut self, request: &[u8]) -> RawResponse {
        self.stream.get_mut().write_all(request).await.expect("write");
        tokio::time::timeout(Duration::from_secs(10), self.read_response()).await.expect("an answer in time")
    }

    async fn read_response(&mut self) -> RawResponse {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).await.expect("read");
            assert!(n > 0, "connection closed after: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        let mut response = RawResponse { status, head, body: Vec::new() };
        let length: usize = response.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        response.body = vec![0; length];
        self.stream.read_exact(&mut response.body).await.expect("body");
        response
    }
}

/// A request head that is never finished (no blank line ends it).
pub async fn unfinished_head(addr: impl ToSocketAddrs) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nX-Slow: a").await.expect("partial head");
    stream
}

/// A `POST /v1/orders` whose head promises 60 bytes of body, of which only `sent` arrive.
pub async fn unfinished_body(addr: SocketAddr, sent: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = "POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(sent).await.expect("part of the body");
    stream
}

/// Reads until the server closes the connection (EOF or reset) and returns what it sent, or
/// `None` if it was still open after `bound` (a bound, so a broken server fails instead of hanging).
pub async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read).await.ok().map(|()| received)
}
