//! A PgBouncer of the test's own (Debian's `pgbouncer`, 1.18 here) in transaction pooling mode
//! in front of the test PostgreSQL, on a free loopback port, stopped when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{eventually, free_port};

pub struct PgBouncer {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    /// Transaction pooling with at most `pool_size` server connections per database and user,
    /// any database name passed through to 127.0.0.1:5432, no authentication (trust).
    pub async fn transaction_mode(pool_size: u32) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgbouncer-{port}"));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let (ini, users) = (dir.join("pgbouncer.ini"), dir.join("users.txt"));
        std::fs::write(&users, "\"postgres\" \"\"\n").expect("auth file");
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
             default_pool_size = {pool_size}\nmax_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits,options\n",
            users = users.display()
        );
        std::fs::write(&ini, config).expect("pgbouncer.ini");
        // Debian puts it in /usr/sbin, which a non-root PATH may lack.
        let program =
            if std::path::Path::new("/usr/sbin/pgbouncer").exists() { "/usr/sbin/pgbouncer" } else { "pgbouncer" };
        let mut command = Command::new(program);
        // PgBouncer refuses to run as root; CI and these machines run tests as root.
        if is_root() {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("Debian's pgbouncer must be installed (apt-get install -y pgbouncer)");
        let up = async || tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok();
        assert!(eventually(Duration::from_secs(10), up, |&up| up).await, "pgbouncer listens on {port}");
        Self { port, child, dir }
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
