//! A bare HTTP/1.1 client over one keep-alive TCP connection: sends exactly the bytes a test
//! writes (invented methods, invalid UTF-8, odd framing), which reqwest would refuse or tidy.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
