//! `loadgen`: the two kinds of HTTP/1.1 load bench/ needs that wrk cannot make — an **open loop**
//! (arrivals at a fixed rate, whatever the answers; latency counted from the scheduled arrival,
//! so a slow server cannot hide its queue) and **closed-loop clients that honour `Retry-After`**
//! on a 503 or 429. One JSON line on stdout: statuses, errors, 2xx latency percentiles, and the
//! 2xx count per time bucket (for recovery times). Loopback only, bounded in time.
//!
//! ```text
//! loadgen --url http://127.0.0.1:8000/v1/orders --method POST --body '{…}' --seconds 5 \
//!         (--rate 4000 [--max-conns 1024] | --conns 64 [--honour-retry-after]) \
//!         [--bucket-ms 100] [--threads 1] [--header 'name: value']…
//! ```
//!
//! Why not oha or wrk2: neither is a Debian package, and `cargo install oha` takes ≈ 5 minutes;
//! this builds with the workspace in seconds.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// Longest wait for one answer; an exchange that takes longer counts as an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Args {
    addr: String,
    request: Arc<Vec<u8>>,
    seconds: f64,
    rate: Option<f64>,
    max_conns: usize,
    conns: usize,
    honour_retry_after: bool,
    bucket: Duration,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut url, mut method, mut body, mut headers) = (None, "GET".to_owned(), None::<String>, Vec::new());
    let mut args = Args {
        addr: String::new(),
        request: Arc::new(Vec::new()),
        seconds: 5.0,
        rate: None,
        max_conns: 1024,
        conns: 1,
        honour_retry_after: false,
        bucket: Duration::from_millis(100),
        threads: 1,
    };
    let num = |v: Option<String>, name: &str| -> Result<f64, String> {
        v.and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number"))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--url" => url = it.next(),
            "--method" => method = it.next().ok_or("--method needs a value")?,
            "--body" => body = it.next(),
            "--header" => headers.push(it.next().ok_or("--header needs 'name: value'")?),
            "--seconds" => args.seconds = num(it.next(), "--seconds")?,
            "--rate" => args.rate = Some(num(it.next(), "--rate")?),
            "--max-conns" => args.max_conns = num(it.next(), "--max-conns")? as usize,
            "--conns" => args.conns = num(it.next(), "--conns")? as usize,
            "--bucket-ms" => args.bucket = Duration::from_millis(num(it.next(), "--bucket-ms")? as u64),
            "--threads" => args.threads = (num(it.next(), "--threads")? as usize).max(1),
            "--honour-retry-after" => args.honour_retry_after = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (addr, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!("refusing to load a non-loopback address: {addr}"));
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n");
    for header in headers {
        head.push_str(&header);
        head.push_str("\r\n");
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    args.addr = addr.to_owned();
    args.request = Arc::new(head.into_bytes());
    Ok(args)
}

/// What requests add to: one per closed-loop client (merged at the end), one behind a lock for
/// the open loop.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    ok_latencies_us: Vec<u64>,
    timeline_ok: Vec<u64>,
}

impl Tally {
    fn record(&mut self, status: u16, latency: Duration, at: usize) {
        *self.statuses.entry(status).or_default() += 1;
        if (200..300).contains(&status) {
            self.ok_latencies_us.push(latency.as_micros() as u64);
            if self.timeline_ok.len() <= at {
                self.timeline_ok.resize(at + 1, 0);
            }
            self.timeline_ok[at] += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.ok_latencies_us.extend(other.ok_latencies_us);
        if self.timeline_ok.len() < other.timeline_ok.len() {
            self.timeline_ok.resize(other.timeline_ok.len(), 0);
        }
        for (i, n) in other.timeline_ok.into_iter().enumerate() {
            self.timeline_ok[i] += n;
        }
    }
}

struct Shared {
    tally: Mutex<Tally>,
    errors: AtomicU64,
    started: Instant,
    bucket: Duration,
}

impl Shared {
    /// The time bucket of now.
    fn bucket_now(&self) -> usize {
        (self.started.elapsed().as_micros() / self.bucket.as_micros().max(1)) as usize
    }

    fn record(&self, status: u16, latency: Duration) {
        let at = self.bucket_now();
        self.tally.lock().expect("tally lock").record(status, latency, at);
    }

    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    close: bool,
}

impl Conn {
    async fn open(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(4096) })
    }

    /// Sends `request` and reads one whole answer (`content-length` bodies only: what the
    /// service sends).
    async fn exchange(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| invalid("head is not UTF-8"))?;
        let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("no status"))?;
        let (mut length, mut retry_after, mut close) = (0usize, None, false);
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().map_err(|_| invalid("content-length"))?,
                "retry-after" => retry_after = value.parse().ok(),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        Ok(Answer { status, retry_after, close })
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// One closed-loop client: the next request as soon as the last is answered, or — honouring
/// `Retry-After` — that many seconds after a 503 or 429.
async fn closed_client(args: Args, shared: Arc<Shared>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let mut open = match conn.take() {
            Some(open) => open,
            None => match timeout(ANSWER_TIMEOUT, Conn::open(&args.addr)).await {
                Ok(Ok(open)) => open,
                _ => {
                    shared.error();
                    sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let Ok(Ok(answer)) = timeout(ANSWER_TIMEOUT, open.exchange(&args.request)).await else {
            shared.error();
            continue;
        };
        tally.record(answer.status, sent.elapsed(), shared.bucket_now());
        if !answer.close {
            conn = Some(open);
        }
        if args.honour_retry_after && matches!(answer.status, 429 | 503) {
            let wait = Duration::from_secs(answer.retry_after.unwrap_or(1));
            sleep_until((Instant::now() + wait).min(deadline)).await;
        }
    }
    tally
}

/// Arrivals every `1 / rate` seconds until the deadline, each on an idle connection or a new
/// one; with `max_conns` busy, an arrival is dropped (counted), never queued at the client.
async fn open_loop(args: Args, rate: f64, shared: Arc<Shared>, deadline: Instant) -> u64 {
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<Conn>();
    let opened = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let period = Duration::from_secs_f64(1.0 / rate);
    let (mut next, mut dropped) = (Instant::now(), 0u64);
    'arrivals: loop {
        sleep_until(next).await;
        let now = Instant::now();
        while next <= now {
            if next >= deadline {
                break 'arrivals;
            }
            let scheduled = next;
            next += period;
            let idle = idle_rx.try_recv().ok();
            if idle.is_none() {
                if opened.load(Ordering::Relaxed) >= args.max_conns {
                    dropped += 1;
                    continue;
                }
                opened.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (args, shared, idle_tx) = (args.clone(), Arc::clone(&shared), idle_tx.clone());
            let (opened, in_flight) = (Arc::clone(&opened), Arc::clone(&in_flight));
            tokio::spawn(async move {
                let kept = one_arrival(idle, &args, &shared, scheduled).await;
                match kept {
                    Some(conn) => drop(idle_tx.send(conn)),
                    None => drop(opened.fetch_sub(1, Ordering::Relaxed)),
                }
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    let waited = Instant::now();
    while in_flight.load(Ordering::Relaxed) > 0 && waited.elapsed() < ANSWER_TIMEOUT {
        sleep(Duration::from_millis(10)).await;
    }
    dropped
}

/// One open-loop request; gives the connection back when it can be reused.
async fn one_arrival(idle: Option<Conn>, args: &Args, shared: &Shared, scheduled: Instant) -> Option<Conn> {
    let mut conn = match idle {
        Some(conn) => conn,
        None => match timeout(ANSWER_TIMEOUT, Conn::open(&args.addr)).await {
            Ok(Ok(conn)) => conn,
            _ => {
                shared.error();
                return None;
            }
        },
    };
    match timeout(ANSWER_TIMEOUT, conn.exchange(&args.request)).await {
        Ok(Ok(answer)) => {
            shared.record(answer.status, scheduled.elapsed());
            (!answer.close).then_some(conn)
        }
        _ => {
            shared.error();
            None
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("loadgen: {why}");
            std::process::exit(2);
        }
    };
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    runtime.expect("a tokio runtime").block_on(run(args));
}

async fn run(args: Args) {
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let shared = Arc::new(Shared { tally: Mutex::default(), errors: AtomicU64::new(0), started, bucket: args.bucket });
    let dropped = match args.rate {
        Some(rate) => open_loop(args.clone(), rate, Arc::clone(&shared), deadline).await,
        None => {
            let clients: Vec<_> = (0..args.conns)
                .map(|_| tokio::spawn(closed_client(args.clone(), Arc::clone(&shared), deadline)))
                .collect();
            for client in clients {
                if let Ok(tally) = client.await {
                    shared.tally.lock().expect("tally lock").merge(tally);
                }
            }
            0
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut tally = std::mem::take(&mut *shared.tally.lock().expect("tally lock"));
    tally.ok_latencies_us.sort_unstable();
    let ok = tally.ok_latencies_us.len();
    let report = serde_json::json!({
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "rate": args.rate,
        "conns": args.conns,
        "honour_retry_after": args.honour_retry_after,
        "started_unix_ms": started_unix_ms as u64,
        "seconds": elapsed,
        "requests": tally.statuses.values().sum::<u64>(),
        "statuses": tally.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "errors": shared.errors.load(Ordering::Relaxed),
        "dropped": dropped,
        "ok": ok,
        "ok_rate": ok as f64 / args.seconds,
        "ok_p50_us": percentile(&tally.ok_latencies_us, 0.5),
        "ok_p99_us": percentile(&tally.ok_latencies_us, 0.99),
        "ok_max_us": tally.ok_latencies_us.last().copied().unwrap_or(0),
        "bucket_ms": args.bucket.as_millis() as u64,
        "timeline_ok": tally.timeline_ok,
    });
    println!("{report}");
}
