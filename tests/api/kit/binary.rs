//! The real `order-service` binary as a process of its own: started on a free port over a test
//! database and the simulator, polled until ready, signalled or killed, its output read.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Backend, TestDb, Upstreams, eventually, free_port};

/// How to start the real binary: a port, a database and a simulator of its own, plus what a test
/// adds. Starting it again (on the same port, over the same database) is a restart.
pub struct TestBinary {
    pub port: u16,
    pub db: TestDb,
    /// The simulator or mocks, serving as long as the binary may call it.
    pub upstreams: Upstreams,
    pub http: reqwest::Client,
    env: Vec<(String, String)>,
}

/// A running `order-service` process, its stdout and stderr drained as it writes (debug logging
/// can exceed a pipe's buffer); killed when dropped.
pub struct Running {
    child: Child,
    output: Option<(JoinHandle<String>, JoinHandle<String>)>,
}

/// What the process wrote.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl TestBinary {
    pub async fn new(backend: Backend) -> Self {
        Self::over(TestDb::new(backend).await, Upstreams::simulator().await).await
    }

    /// Over upstreams of the test's choosing (scripted mocks, when the simulator's fault table
    /// cannot make the case happen on cue).
    pub async fn with_upstreams(backend: Backend, upstreams: Upstreams) -> Self {
        Self::over(TestDb::new(backend).await, upstreams).await
    }

    /// Another replica: a binary of its own over `db` (which stays the owner's to drop).
    pub async fn same_database_as(db: &TestDb) -> Self {
        Self::over(db.shared(), Upstreams::simulator().await).await
    }

    async fn over(db: TestDb, upstreams: Upstreams) -> Self {
        let port = free_port();
        let (users, products) = upstreams.urls();
        let env = [
            ("HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("DATABASE_URL", db.url.clone()),
            ("USER_SERVICE_URL", users),
            ("PRODUCT_SERVICE_URL", products),
        ];
        let env = env.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        Self { port, db, upstreams, http: reqwest::Client::new(), env }
    }

    /// Sets an environment variable of the process (set again, the last value wins).
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Spawns the binary and waits until `/health/ready` answers 200 (at most 20 s).
    pub async fn start(&self) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_order-service"))
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("order-service starts");
        let stdout = drain(child.stdout.take().expect("stdout"));
        let stderr = drain(child.stderr.take().expect("stderr"));
        let mut running = Running { child, output: Some((stdout, stderr)) };
        let (ready, exited) = eventually(
            Duration::from_secs(20),
            async || {
                let ready = self.http.get(self.url("/health/ready")).send().await.is_ok_and(|r| r.status() == 200);
                (ready, running.child.try_wait().expect("wait"))
            },
            |(ready, exited)| *ready || exited.is_some(),
        )
        .await;
        if !ready {
            let Output { stdout, stderr } = running.output();
            panic!("order-service never became ready at {} (exit: {exited:?}):\n{stdout}{stderr}", self.url(""));
        }
        running
    }
}

impl Running {
    /// What an orchestrator sends to stop it gracefully.
    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// What an operator sends to reload the settings.
    pub fn sighup(&self) {
        let _ = Command::new("kill").arg("-HUP").arg(self.child.id().to_string()).status();
    }

    /// kill -9, and reaped.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Its exit status once it exits; killed if it has not within `bound` (so a hang fails the
    /// test instead of stalling it).
    pub async fn exit_status(&mut self, bound: Duration) -> ExitStatus {
        match eventually(bound, async || self.child.try_wait().expect("wait"), Option::is_some).await {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                self.child.wait().expect("exit status")
            }
        }
    }

    /// Everything it wrote to stdout and stderr (it is killed first if it still runs).
    pub fn output(mut self) -> Output {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (stdout, stderr) = self.output.take().expect("output is read once");
        Output { stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader") }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the service said last.
        if let (true, Some((stdout, stderr))) = (std::thread::panicking(), self.output.take()) {
            for (name, text) in [("stdout", stdout.join()), ("stderr", stderr.join())] {
                let text = text.unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("order-service {name} (last lines):");
                tail.iter().rev().for_each(|line| eprintln!("{line}"));
            }
        }
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
