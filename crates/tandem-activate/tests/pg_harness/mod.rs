//! A real PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port (socket in the same directory), stopped on drop.
//!
//! The binaries are found under `/usr/lib/postgresql/<version>/bin` (the Debian package
//! `postgresql`, installed by `scripts/install-test-deps.sh`) or in `TANDEM_PG_BIN`. PostgreSQL
//! refuses to run as root, so when the tests run as root (CI) the server runs as the `postgres`
//! user the package creates, else as `nobody`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// (uid, gid) the server runs as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    /// With TLS: TCP connections must use it (`hostssl`), plain ones are refused.
    tls: bool,
}

impl PgServer {
    /// A fresh cluster, started and ready; user `tandem` (trust authentication).
    pub fn start() -> PgServer {
        PgServer::create(None)
    }

    /// A fresh cluster with `ssl = on`, presenting `cert_pem` (with `key_pem`), that accepts TCP
    /// connections only over TLS (`hostssl`; `hostnossl … reject`). The Unix socket stays open
    /// without TLS, for [`PgServer::client`].
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> PgServer {
        PgServer::create(Some((cert_pem, key_pem)))
    }

    fn create(tls: Option<(&str, &str)>) -> PgServer {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("tandem-pg-")
            .tempdir()
            .expect("temporary directory");
        let run_as = server_user();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown data dir");
        }
        let server = PgServer {
            dir,
            bin,
            port: free_port(),
            run_as,
            tls: tls.is_some(),
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data_dir(),
                "-U",
                "tandem",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        if let Some((cert_pem, key_pem)) = tls {
            server.install_tls(cert_pem, key_pem);
        }
        server.resume();
        server
    }

    /// Certificate and key files the server user owns (the key `0600`, as PostgreSQL demands),
    /// and a `pg_hba.conf` that lets TCP clients in only over TLS.
    fn install_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = PathBuf::from(self.data_dir());
        for (name, content, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
            (
                "pg_hba.conf",
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
                0o600,
            ),
        ] {
            let path = data.join(name);
            std::fs::write(&path, content).expect("write a TLS file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .expect("chmod a TLS file");
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown a TLS file");
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://tandem@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://tandem@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn resume(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (`fast`: clients are disconnected, like an administrator's shutdown).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    /// A connection for assertions (over the Unix socket when the server insists on TLS).
    pub async fn client(&self) -> tokio_postgres::Client {
        let target = if self.tls {
            format!(
                "host={} port={} user=tandem dbname=postgres",
                self.dir.path().display(),
                self.port
            )
        } else {
            self.url()
        };
        let (client, connection) = tokio_postgres::connect(&target, tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed: {}\n{}\n{}\nserver log:\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's `bin` directory.
fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): run scripts/install-test-deps.sh or set TANDEM_PG_BIN"
        ),
    }
}

/// Root may not run PostgreSQL: the `postgres` user, else `nobody`.
fn server_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == name {
                if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                    return Some((uid, gid));
                }
            }
        }
    }
    panic!("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL");
}

fn is_root() -> bool {
    // The owner of our own /proc entry is our effective user.
    std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(Path::new("/proc/self")).expect("/proc/self"),
    ) == 0
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
