//! The server as a child process on the fixture model: started, stopped with SIGTERM as
//! an orchestrator does, or killed (SIGKILL when dropped), and started again on the
//! same data directory. For the tests about replicas and crashes.

use crate::helpers::{corpus, fixture_model};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `refact serve`; SIGKILLed when dropped.
pub struct ChildServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ChildServer {
    /// Starts `refact serve` with auth on, leases of 3 s, and `env` on top; waits until
    /// `/readyz` answers. Its log goes to `data_dir/log_name`.
    pub async fn start(
        database_url: &str,
        data_dir: &Path,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> ChildServer {
        let port = free_port();
        let log = data_dir.join(log_name);
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_refact"))
            .arg("serve")
            .args(["--model", &fixture_model().display().to_string()])
            .args(["--database-url", database_url])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--data-dir", &data_dir.join("data").display().to_string()])
            .args(["--device", "cpu", "--dtype", "f32"])
            // Not the repository's config/default.toml: the test sets what it needs.
            .current_dir(data_dir)
            .env_remove("REFACT_CONFIG")
            .env("REFACT_AUTH__ENABLED", "true")
            .env("REFACT_STATISTICS__CORPUS", corpus())
            .env("REFACT_STATISTICS__LINES", "200")
            .env("REFACT_WORKER__LEASE_SECS", "3")
            .env("REFACT_WORKER__HEARTBEAT_SECS", "0.5")
            .env("REFACT_WORKER__POLL_INTERVAL_SECS", "0.2")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start refact serve");
        let mut server = ChildServer {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
                if response.status().is_success() {
                    return server;
                }
            }
            let exited = server.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "the server did not become ready ({exited:?}):\n{}",
                    server.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id (worker ids, and so lease owners, contain it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to 60 s) for the process to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit 60 s after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
