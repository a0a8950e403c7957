//! The commands deploy/ provisions a cluster with, against a real (single, secured) master:
//! `taurus tls init`, `taurus health` (gRPC and `--http`), `taurus acl bootstrap
//! --secret-file` and the global `--token-file`. Their exit statuses are what container
//! health checks and one-shot compose services rely on.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Child;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use common::assert_one_error_line;
use common::free_ports;
use common::logged_addr;
use common::refused_addr;
use common::run;
use common::taurus;

/// One master with TLS and authentication, killed when dropped.
struct Master {
    child: Child,
    grpc: String,
    http: String,
    pki: String,
    _dir: tempfile::TempDir,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Master {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki").to_str().expect("utf-8").to_string();
        let r = run(&[
            "tls", "init", "--dir", &pki, "--master", "m1", "--client", "admin",
        ]);
        assert_eq!(r.code, Some(0), "{r:?}");
        let grpc = format!("127.0.0.1:{}", free_ports(1)[0]);
        let log_path = dir.path().join("master.log");
        let log = std::fs::File::create(&log_path).expect("log");
        // HTTP on port 0: the master binds a free port itself and logs it.
        let child = taurus()
            .args(["master", "start", "--id", "1", "--listen", &grpc, "--auth"])
            .args(["--peers", &format!("1={grpc}"), "--http-listen", "127.0.0.1:0"])
            .args(["--tls-ca", &format!("{pki}/ca.crt")])
            .args(["--tls-cert", &format!("{pki}/master-m1.crt")])
            .args(["--tls-key", &format!("{pki}/master-m1.key")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("master starts");
        let mut master = Master {
            child,
            grpc,
            http: String::new(),
            pki,
            _dir: dir,
        };
        master.http = logged_addr(
            &log_path,
            "serving /metrics, /healthz and the status page",
            "http",
            Duration::from_secs(30),
        );
        master
    }

    /// `--ca/--cert/--key` of the admin client, then `args`.
    fn as_client(&self, args: &[&str]) -> common::Run {
        let p = &self.pki;
        let (ca, cert, key) = (
            format!("{p}/ca.crt"),
            format!("{p}/client-admin.crt"),
            format!("{p}/client-admin.key"),
        );
        let mut all = vec![
            "--masters",
            &self.grpc,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs `args` until it exits 0, failing after `limit` with the last run.
    fn until_ok(&self, args: &[&str], limit: Duration) -> common::Run {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.as_client(args);
            if r.code == Some(0) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not succeed within {limit:?}: {r:?}",
                args.join(" ")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn health_answers_by_exit_status_over_mutual_tls_and_http() {
    let m = Master::start();
    let r = m.until_ok(
        &["--timeout", "2s", "health", "--addr", &m.grpc],
        Duration::from_secs(30),
    );
    assert!(r.stdout.contains("SERVING"), "{r:?}");
    let r = m.as_client(&["health", "--addr", &m.grpc, "--service", "taurus.v1.TaskService"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    // Without --addr: the first of --masters.
    let r = m.as_client(&["--json", "health"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("\"status\":\"SERVING\""), "{r:?}");

    // Answered, but not serving that service: 1.
    let r = m.as_client(&["health", "--addr", &m.grpc, "--service", "no.such.Service"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_one_error_line(&r, "SERVICE_UNKNOWN");

    // Cannot ask: 2. Nothing listens; or no client certificate for a mutual-TLS master.
    // Bound but not listening, held to the end of the test: refused, and no one else's port.
    let (_closed_socket, closed) = refused_addr();
    let r = m.as_client(&["--timeout", "2s", "health", "--addr", &closed]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_one_error_line(&r, "cannot connect");
    let r = run(&["--timeout", "2s", "health", "--addr", &m.grpc]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_one_error_line(&r, &m.grpc);
    let r = run(&["health", "--addr", &m.grpc, "--ca", "/nonexistent/ca.crt"]);
    assert_one_error_line(&r, "--cert");

    // The plain-HTTP port, as agents' health checks use it.
    let r = run(&["--timeout", "2s", "health", "--http", &m.http]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("200"), "{r:?}");
    let r = run(&["--timeout", "2s", "health", "--http", &closed]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_one_error_line(&r, "cannot connect");
    let r = run(&["health", "--http", &m.http, "--service", "x"]);
    assert_eq!(r.code, Some(2), "--http and --service conflict: {r:?}");
}

#[test]
fn bootstrap_writes_the_secret_once_and_token_file_uses_it() {
    let m = Master::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("admin.token");
    let file_s = file.to_str().expect("utf-8");
    let r = m.until_ok(
        &[
            "--timeout",
            "5s",
            "acl",
            "bootstrap",
            "--name",
            "ops",
            "--secret-file",
            file_s,
        ],
        Duration::from_secs(30),
    );
    assert!(!r.stdout.contains("tau_"), "the secret is not printed: {r:?}");
    let secret = std::fs::read_to_string(&file).expect("secret file");
    assert!(secret.trim().starts_with("tau_"), "{secret:?}");
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "owner only");

    // Again (a compose `up` after the first): nothing to do, success, same secret.
    let r = m.as_client(&["acl", "bootstrap", "--secret-file", file_s]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("already"), "{r:?}");
    assert_eq!(std::fs::read_to_string(&file).expect("secret file"), secret);

    // The file gone but the cluster bootstrapped: a clear error, not a silent success.
    let other = dir.path().join("other.token");
    let r = m.as_client(&[
        "acl",
        "bootstrap",
        "--secret-file",
        other.to_str().expect("utf-8"),
    ]);
    assert_one_error_line(&r, "already bootstrapped");
    assert!(!other.exists());

    // --token-file authenticates like --token.
    let r = m.as_client(&["--token-file", file_s, "acl", "whoami"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("ops") && r.stdout.contains("admin"), "{r:?}");
    let r = m.as_client(&["acl", "whoami"]);
    assert_ne!(r.code, Some(0), "no token, no access: {r:?}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let r = m.as_client(&["--token-file", empty.to_str().expect("utf-8"), "acl", "whoami"]);
    assert_one_error_line(&r, "--token-file");
    let r = m.as_client(&["--token-file", "/nonexistent/token", "acl", "whoami"]);
    assert_one_error_line(&r, "--token-file /nonexistent/token");
}

#[test]
fn tls_init_makes_files_that_masters_accept_and_keeps_them_on_rerun() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let args = [
        "tls", "init", "--dir", d, "--master", "m1,m2", "--agent", "a1", "--client", "admin",
    ];
    let r = run(&args);
    assert_eq!(r.code, Some(0), "{r:?}");
    let before = std::fs::read(Path::new(d).join("master-m1.crt")).expect("cert");
    let r = run(&args);
    assert_eq!(r.code, Some(0), "rerun succeeds: {r:?}");
    assert!(!r.stdout.contains("wrote"), "nothing new: {r:?}");
    assert_eq!(
        std::fs::read(Path::new(d).join("master-m1.crt")).expect("cert"),
        before
    );
    std::fs::remove_file(Path::new(d).join("ca.key")).expect("rm");
    let r = run(&args);
    assert_one_error_line(&r, "ca.key");
}
