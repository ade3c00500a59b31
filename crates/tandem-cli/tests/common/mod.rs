//! The shared harness of the black-box tests: starts the real `tandem` binary on a free loopback
//! port with its own data directory, and talks to it over HTTP.
#![allow(dead_code)]

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use parking_lot::Mutex;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const WRITE_KEY: &str = "test-write-key-0123456789";
pub const SECOND_WRITE_KEY: &str = "test-write-key-mobile-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A second workspace (`other`, with its own source) for tests of workspace isolation; appended
/// to the test config after the demo workspace's own sections.
pub const OTHER_WORKSPACE: &str = r#"
[[workspaces]]
id = "other"
name = "Other market"

[[workspaces.sources]]
id = "site"
name = "Other site"
owner = "other-team@example.test"
write_key = "other-write-key-0123456789"
"#;
/// How long a started server may take to answer /readyz.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    child: Option<Child>,
    pub starts: usize,
    env: Vec<(String, String)>,
}

impl TestServer {
    /// A server with workspace `demo` (sources `web` and `mobile`) and `extra` TOML appended.
    pub fn start(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Self::start_in(dir, data, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, data: PathBuf, extra: &str) -> TestServer {
        Self::start_with_env(dir, data, extra, &[])
    }

    /// A server whose process also gets `env` (e.g. libfaketime's variables).
    pub fn start_with_env(
        dir: tempfile::TempDir,
        data: PathBuf,
        extra: &str,
        env: &[(&str, &str)],
    ) -> TestServer {
        let port = free_port();
        let config = dir.path().join("tandem.toml");
        std::fs::write(&config, config_text(port, &data, extra)).unwrap();
        let mut server = TestServer {
            dir,
            data,
            config,
            port,
            child: None,
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TANDEM_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tandem");
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "tandem exited during start ({status}):\n{}",
                    self.server_log()
                );
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = stream
                    .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "tandem not ready after {READY_TIMEOUT:?}:\n{}",
            self.server_log()
        );
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait: the clean shutdown path.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc_kill(child.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("tandem did not stop on SIGTERM within 20 s");
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn restart_after_kill(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `tandem log export --meta` as JSON values.
    pub fn export(&self) -> Vec<serde_json::Value> {
        let output = run_cli(&[
            "log",
            "export",
            "--meta",
            "--data",
            self.data.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("export line is JSON"))
            .collect()
    }

    /// The stored events (without meta).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.export()
            .into_iter()
            .map(|line| line["event"].clone())
            .collect()
    }

    pub fn verify(&self) -> Output {
        run_cli(&["log", "verify", "--data", self.data.to_str().unwrap()])
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.server_log());
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

pub fn run_cli(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the CLI, asserts it succeeded (showing its stderr if not) and returns its stdout.
#[allow(dead_code)] // not every test binary runs the CLI
pub fn run_cli_ok(args: &[&str]) -> Vec<u8> {
    let output = run_cli(args);
    assert!(
        output.status.success(),
        "tandem {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs the CLI, asserts it succeeded and parses its stdout as JSON.
#[allow(dead_code)] // not every test binary runs the CLI
pub fn run_cli_json(args: &[&str]) -> serde_json::Value {
    let stdout = run_cli_ok(args);
    serde_json::from_slice(&stdout).unwrap_or_else(|error| {
        panic!(
            "tandem {}: stdout is not JSON ({error}): {}",
            args.join(" "),
            String::from_utf8_lossy(&stdout)
        )
    })
}

pub fn config_text(port: u16, data: &Path, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"

[organization]
name = "Test Org"

[[workspaces]]
id = "demo"
name = "Demo"

[[workspaces.sources]]
id = "web"
name = "Website"
owner = "web-team@example.test"
write_key = "{WRITE_KEY}"

[[workspaces.sources]]
id = "mobile"
name = "Mobile app"
owner = "mobile-team@example.test"
write_key = "{SECOND_WRITE_KEY}"
{extra}
"#,
        data = data.display()
    )
}

pub fn basic(write_key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    )
}

/// Polls the async check `done` every 100 ms until it holds; panics naming `what` after `timeout`.
#[allow(dead_code)] // not every test binary waits this way
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs JSON to a Segment endpoint with the write key as Basic auth; returns status and JSON body.
pub async fn post(
    server: &TestServer,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client()
        .post(server.url(path))
        .header("authorization", basic(WRITE_KEY))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

pub async fn admin_get(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let response = client()
        .get(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

pub async fn admin_post(
    server: &TestServer,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client()
        .post(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

pub fn by_message_id<'a>(events: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|event| event["messageId"] == id)
        .collect()
}

/// A real webhook receiver on a loopback port keeping every event it is sent (a batch's events
/// one by one), answering 200.
pub struct Receiver {
    pub port: u16,
    pub events: Arc<Mutex<Vec<Value>>>,
}

async fn hook(State(events): State<Arc<Mutex<Vec<Value>>>>, body: String) -> StatusCode {
    let body: Value = serde_json::from_str(&body).unwrap();
    match body.get("batch") {
        Some(batch) => events
            .lock()
            .extend(batch.as_array().unwrap().iter().cloned()),
        None => events.lock().push(body),
    }
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(events.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { port, events }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
}

/// A management API token of `role`, for the organization (`None`) or one workspace.
pub async fn token(server: &TestServer, role: &str, workspace: Option<&str>) -> String {
    let path = match workspace {
        Some(workspace) => format!("/api/v1/workspaces/{workspace}/tokens"),
        None => "/api/v1/tokens".to_string(),
    };
    let name = format!("{role} of {}", workspace.unwrap_or("the organization"));
    let (status, body) = admin_post(
        server,
        &path,
        &serde_json::json!({"name": name, "role": role}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// Any management call with a bearer token: the status and the body (JSON, else its text).
pub async fn call(
    server: &TestServer,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates a user with the admin token and logs them in: the login answer (`session`,
/// `csrf_token`, `user`, …).
pub async fn user_login(
    server: &TestServer,
    email: &str,
    role: &str,
    workspace: Option<&str>,
    password: &str,
) -> serde_json::Value {
    let (status, created) = admin_post(
        server,
        "/api/v1/users",
        &serde_json::json!({"email": email, "role": role, "workspace": workspace, "password": password}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let login = client()
        .post(server.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    login.json().await.unwrap()
}
