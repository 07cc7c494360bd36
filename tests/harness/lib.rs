//! The harness of the end-to-end suite (`tests/e2e/`): the built `refact` binary driven
//! as a user drives it. Each scenario gets a fresh database (a SQLite file or a uniquely
//! named PostgreSQL database on `REFACT_TEST_PG_URL`, dropped afterwards), a temp dir for
//! the server's data, and `refact serve` child processes on free loopback ports, killed
//! (SIGKILL) when dropped.
//!
//! The binary is the `refact` of the same build as the test: `cargo test --workspace`
//! builds it into the target dir next to this test's executable
//! (`target/<profile>/refact`). When it is missing (`cargo test -p refact-e2e` on a fresh
//! target dir) it is built once with `cargo build -p refact-server --bin refact`.
//! `REFACT_E2E_BIN` names another binary (e.g. a release build) instead. Under
//! `cargo test -p refact-e2e` alone an existing binary is not rebuilt: after changing the
//! server, run `cargo test --workspace` (or build the binary) first.

use futures::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use refact_store::testing::TestDatabase;

/// Which database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh, empty database, dropped with the value.
pub async fn database(kind: Db) -> TestDatabase {
    match kind {
        Db::Sqlite => TestDatabase::sqlite(),
        Db::Postgres => TestDatabase::postgres().await,
    }
}

/// The `refact` binary under test (see the crate docs for how it is found).
pub fn refact_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("REFACT_E2E_BIN") {
            return PathBuf::from(bin);
        }
        // The test executable is target/<profile>/deps/e2e-<hash>; cargo puts the
        // binaries of the same build in target/<profile>.
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lies in target/<profile>/deps");
        let bin = profile_dir.join(format!("refact{}", std::env::consts::EXE_SUFFIX));
        if !bin.is_file() {
            build_refact(profile_dir);
        }
        assert!(
            bin.is_file(),
            "{} missing after building it; run `cargo build -p refact-server --bin refact`",
            bin.display()
        );
        bin
    })
}

/// `cargo build -p refact-server --bin refact` in the profile of `profile_dir`.
fn build_refact(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command.args(["build", "-p", "refact-server", "--bin", "refact"]);
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    eprintln!("building the refact binary: {command:?}");
    let status = command
        .current_dir(refact_testkit::workspace_root())
        .status()
        .expect("run cargo to build the refact binary");
    assert!(status.success(), "building the refact binary failed");
}

/// A `refact` command as a user runs it: in `dir` (so that no `config/default.toml` of
/// the repository applies), with none of the caller's `REFACT_*` variables.
pub fn refact(dir: &Path) -> Command {
    let mut command = Command::new(refact_bin());
    command.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REFACT_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs a `refact` command to its end; panics with its stderr unless it succeeds.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("run refact");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `refact token create --name NAME --scope ...` on a database; the token it prints.
pub fn create_token(dir: &Path, database_url: &str, name: &str, scopes: &[&str]) -> String {
    let mut command = refact(dir);
    command.args([
        "token",
        "create",
        "--database-url",
        database_url,
        "--name",
        name,
    ]);
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    let output = run_ok(&mut command);
    let token = String::from_utf8(output.stdout).expect("a UTF-8 token");
    let token = token.trim().to_string();
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "one token alone on stdout: {token:?}"
    );
    token
}

/// What a test server runs on.
pub struct ServerSpec<'a> {
    pub database_url: &'a str,
    /// The server's working directory; its data dir is `<dir>/data`, its logs go to
    /// `<dir>/<log_name>`.
    pub dir: &'a Path,
    pub log_name: &'a str,
}

/// A `refact serve` child process on a free loopback port; SIGKILLed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `refact serve` on the fixture model (`tests/fixtures/tiny-sd`), CPU, f32,
    /// auth on, the built-in caption corpus cut to 200 lines, small limits, short worker
    /// periods; waits until it is ready.
    pub async fn start(spec: ServerSpec<'_>) -> Server {
        let log = spec.dir.join(spec.log_name);
        let mut command = refact(spec.dir);
        command
            .arg("serve")
            .arg("--model")
            .arg(refact_testkit::fixture_dir())
            .args(["--database-url", spec.database_url])
            // Port 0: the server picks a free port and logs it.
            .args(["--bind", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(spec.dir.join("data"))
            .args(["--device", "cpu", "--dtype", "f32"])
            .env("REFACT_LOG", "info")
            .env("REFACT_AUTH__ENABLED", "true")
            .env("REFACT_STATISTICS__CORPUS", "builtin")
            .env("REFACT_STATISTICS__LINES", "200")
            .env("REFACT_LIMITS__MAX_WIDTH", "256")
            .env("REFACT_LIMITS__MAX_HEIGHT", "256")
            .env("REFACT_LIMITS__MAX_STEPS", "50")
            .env("REFACT_WORKER__LEASE_SECS", "10")
            .env("REFACT_WORKER__HEARTBEAT_SECS", "1")
            .env("REFACT_WORKER__POLL_INTERVAL_SECS", "0.2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command.spawn().expect("start refact serve");

        // Copy stderr to the log file; hand over the address of the ready line.
        let stderr = child.stderr.take().expect("piped stderr");
        let mut file = std::fs::File::create(&log).expect("create the server log");
        let (address_tx, address_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if line.contains("refact-serve ready") {
                    if let Some(address) = field(&line, "address") {
                        let _ = address_tx.send(address.to_string());
                    }
                }
            }
        });

        let mut server = Server {
            child,
            base: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let address = loop {
            if let Ok(address) = address_rx.try_recv() {
                break address;
            }
            let exited = server.child.try_wait().expect("poll the server");
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "the server did not become ready ({exited:?}):\n{}",
                    server.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        server.base = format!("http://{address}");
        let response = reqwest::get(server.url("/readyz"))
            .await
            .expect("GET /readyz");
        assert!(
            response.status().is_success(),
            "/readyz: {}",
            response.status()
        );
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would end it; the exit status.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name=value` in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// On Linux, the child gets SIGKILL when the thread that started it ends, so that a
/// test process killed before its `Drop`s ran leaves no server behind.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// An HTTP client of a server with a bearer token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &Server, token: Option<&str>) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            token: token.map(str::to_string),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path`, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.request(Method::GET, path).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `method path` with a JSON body (or none); the status and the JSON answer (Null
    /// when the body is empty).
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        };
        (status, value)
    }

    /// `POST /generate` at `version` (None: the default); the PNG bytes and the version
    /// the server echoes.
    pub async fn generate(&self, version: Option<&str>, body: &Value) -> (Vec<u8>, i64) {
        let path = match version {
            Some(v) => format!("/generate?version={v}"),
            None => "/generate".into(),
        };
        let response = self
            .request(Method::POST, &path)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap().to_vec();
        assert_eq!(
            status,
            StatusCode::OK,
            "POST {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(headers["content-type"], "image/png", "POST {path}");
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "POST {path}: not a PNG"
        );
        let version = headers["x-refact-version"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (bytes, version)
    }

    /// Follows `GET /edits/{id}/events` to its end (the terminal `status` event): the
    /// (event name, JSON data) pairs.
    pub async fn follow_events(&self, id: &str, timeout: Duration) -> Vec<(String, Value)> {
        let path = format!("/edits/{id}/events");
        let response = self.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let read = async {
            let mut events = Vec::new();
            let mut buffer = String::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_event(&block) {
                        events.push(event);
                    }
                }
            }
            events
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| panic!("{path} did not end within {timeout:?}"))
    }
}

/// One Server-Sent Events block: its `event:` name (default `message`) and JSON `data:`.
fn parse_event(block: &str) -> Option<(String, Value)> {
    let mut name = String::from("message");
    let mut data = String::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim().to_string();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    if data.is_empty() {
        return None;
    }
    Some((
        name,
        serde_json::from_str(&data).expect("event data is JSON"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_of_the_ready_line() {
        let line = "2026-01-01T00:00:00.000Z  INFO refact_server::startup: refact-serve ready \
                    address=127.0.0.1:40123 model=tests/fixtures/tiny-sd fingerprint=ab versions=1";
        assert_eq!(field(line, "address"), Some("127.0.0.1:40123"));
        assert_eq!(field(line, "port"), None);
    }

    #[test]
    fn parses_an_event_block() {
        let (name, data) =
            parse_event("event: status\ndata: {\"status\":\"applied\"}\n\n").unwrap();
        assert_eq!(name, "status");
        assert_eq!(data["status"], "applied");
        assert!(parse_event(": keep-alive\n\n").is_none());
    }
}
