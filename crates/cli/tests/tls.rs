//! `taurus tls` makes files that real masters, agents and the CLI use for mutual TLS; the
//! certificates follow the convention authorisation reads; bad TLS settings are one clear
//! error line, never a panic.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use common::Agents;
use common::FAST_SCHEDULER_TOML;
use common::Masters;
use common::assert_one_error_line;
use common::run;
use x509_parser::prelude::FromDer as _;
use x509_parser::prelude::GeneralName;
use x509_parser::prelude::X509Certificate;

fn ok(r: &common::Run) {
    assert_eq!(r.code, Some(0), "{r:?}");
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().expect("utf-8 path").to_string()
}

/// The subject's `(CN, OU, O)`, the EKUs `(serverAuth, clientAuth)` and the SANs of a PEM file.
fn describe(file: &Path) -> ((String, String, String), (bool, bool), Vec<String>) {
    let pem = std::fs::read(file).expect("certificate file");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let (_, cert) = X509Certificate::from_der(&pem.contents).expect("X.509");
    let attr = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let subject = cert.subject();
    let names = (
        attr(&mut subject.iter_common_name()),
        attr(&mut subject.iter_organizational_unit()),
        attr(&mut subject.iter_organization()),
    );
    let eku = cert
        .extended_key_usage()
        .expect("EKU parses")
        .map(|e| (e.value.server_auth, e.value.client_auth))
        .unwrap_or_default();
    let sans = cert
        .subject_alternative_name()
        .expect("SAN parses")
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(ip) => format!(
                        "IP:{}",
                        ip.iter().map(u8::to_string).collect::<Vec<_>>().join(".")
                    ),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    (names, eku, sans)
}

#[test]
fn tls_commands_make_files_that_masters_agents_and_the_cli_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dir_arg = d.to_str().unwrap();

    // A CA; its key is private; nothing is overwritten without --force.
    let r = run(&["tls", "ca", "create", "--dir", dir_arg]);
    ok(&r);
    assert!(
        r.stdout.contains(&path(d, "ca.crt")) && r.stdout.contains(&path(d, "ca.key")),
        "{r:?}"
    );
    let mode = |f: &str| {
        std::fs::metadata(d.join(f))
            .expect("written")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    let ca_before = std::fs::read(d.join("ca.crt")).unwrap();
    assert_one_error_line(&run(&["tls", "ca", "create", "--dir", dir_arg]), "exists already");
    assert_eq!(
        std::fs::read(d.join("ca.crt")).unwrap(),
        ca_before,
        "not overwritten"
    );
    ok(&run(&["tls", "ca", "create", "--dir", dir_arg, "--force"]));
    assert_ne!(
        std::fs::read(d.join("ca.crt")).unwrap(),
        ca_before,
        "--force overwrites"
    );

    // One certificate shared by the three test masters (they all listen on 127.0.0.1), an agent
    // and a client.
    let r = run(&[
        "tls",
        "cert",
        "create",
        "--master",
        "m",
        "--san",
        "m.example,10.9.8.7",
        "--dir",
        dir_arg,
    ]);
    ok(&r);
    assert!(r.stdout.contains(&path(d, "master-m.crt")), "{r:?}");
    ok(&run(&[
        "tls", "cert", "create", "--agent", "agent-1", "--dir", dir_arg,
    ]));
    let r = run(&["tls", "cert", "create", "--client", "alice", "--dir", dir_arg]);
    ok(&r);
    assert!(r.stdout.contains("export TAURUS_CA="), "{r:?}");
    assert_eq!(mode("client-alice.key"), 0o600);
    assert_one_error_line(
        &run(&["tls", "cert", "create", "--client", "alice", "--dir", dir_arg]),
        "exists already",
    );
    assert_one_error_line(
        &run(&["tls", "cert", "create", "--client", "bad/name", "--dir", dir_arg]),
        "bad/name",
    );

    // The convention authorisation reads.
    let (names, eku, sans) = describe(&d.join("master-m.crt"));
    assert_eq!(names, ("m".into(), "master".into(), "taurus".into()));
    assert_eq!(eku, (true, true), "masters serve and dial");
    for san in [
        "DNS:m",
        "DNS:localhost",
        "IP:127.0.0.1",
        "DNS:m.example",
        "IP:10.9.8.7",
    ] {
        assert!(sans.contains(&san.to_string()), "{san} missing from {sans:?}");
    }
    let (names, eku, sans) = describe(&d.join("agent-1.crt"));
    assert_eq!(names, ("agent-1".into(), "agent".into(), "taurus".into()));
    assert_eq!(eku, (false, true), "agents only dial");
    assert_eq!(sans, ["DNS:agent-1"]);
    let (names, eku, sans) = describe(&d.join("client-alice.crt"));
    assert_eq!(names, ("alice".into(), "client".into(), "taurus".into()));
    assert_eq!(eku, (false, true));
    assert_eq!(sans, ["DNS:alice"]);

    // Masters accept the files (all three, each with the same certificate).
    let toml = format!(
        "{FAST_SCHEDULER_TOML}[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        path(d, "ca.crt"),
        path(d, "master-m.crt"),
        path(d, "master-m.key")
    );
    let mut masters = Masters::start_in(d, &toml);
    let m = masters.flag();
    let (ca, cert, key) = (
        path(d, "ca.crt"),
        path(d, "client-alice.crt"),
        path(d, "client-alice.key"),
    );
    let tls = [
        "--ca",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];
    let taurus = |args: &[&str]| run(&[&["--masters", m.as_str()][..], &tls[..], args].concat());

    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        if let Err(e) = masters.check_running() {
            panic!("{e}{}", masters.logs());
        }
        let r = taurus(&["--timeout", "1s", "cluster", "status", "--json"]);
        let leader = (r.code == Some(0))
            .then(|| serde_json::from_str::<serde_json::Value>(&r.stdout).ok())
            .flatten()
            .is_some_and(|status| !status["leader"].is_null());
        if leader {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "no leader over TLS: {r:?}{}",
            masters.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // An agent over TLS runs a task submitted over TLS.
    let mut agents = Agents::new(d);
    agents.start(
        "agent-1",
        &m,
        &[
            "--tls-ca",
            &path(d, "ca.crt"),
            "--tls-cert",
            &path(d, "agent-1.crt"),
            "--tls-key",
            &path(d, "agent-1.key"),
        ],
    );
    let r = taurus(&["task", "submit", "--json", "--", "echo", "over tls"]);
    ok(&r);
    let submitted: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let id = submitted["id"].as_str().expect("id").to_string();
    let r = taurus(&["--timeout", "60s", "task", "wait", &id]);
    assert_eq!(r.code, Some(0), "{r:?}{}{}", agents.logs(20), masters.logs());
    let r = taurus(&["task", "logs", &id]);
    ok(&r);
    assert!(r.stdout.contains("over tls"), "{r:?}");

    // Without TLS settings the masters refuse the CLI: one error line.
    let r = run(&["--masters", &m, "--timeout", "1s", "cluster", "status"]);
    assert_one_error_line(&r, "no master could serve the request");
    drop(agents);
    drop(masters);
}

#[test]
fn bad_tls_settings_are_one_clear_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dir_arg = d.to_str().unwrap();
    ok(&run(&["tls", "ca", "create", "--dir", dir_arg]));
    ok(&run(&[
        "tls", "cert", "create", "--client", "alice", "--dir", dir_arg,
    ]));
    let (ca, cert) = (path(d, "ca.crt"), path(d, "client-alice.crt"));
    let missing = path(d, "nope.key");

    // The client: a missing file is named, quickly (no retrying against the masters).
    let r = run(&[
        "--ca", &ca, "--cert", &cert, "--key", &missing, "cluster", "status",
    ]);
    assert_one_error_line(&r, &missing);
    assert!(r.elapsed < Duration::from_secs(5), "{r:?}");
    // A file that is not PEM is named.
    let r = run(&["--ca", &cert, "--cert", &cert, "--key", &cert, "task", "list"]);
    assert_one_error_line(&r, "key_file");
    // Only some of the three.
    let r = run(&["--ca", &ca, "task", "list"]);
    assert_one_error_line(&r, "--cert");
    // https:// without TLS settings.
    let r = run(&["--masters", "https://127.0.0.1:1", "task", "list"]);
    assert_one_error_line(&r, "TLS");

    // A master: refuses to start, naming the key or the file.
    let r = run(&["master", "start", "--data-dir", &path(d, "data"), "--tls-ca", &ca]);
    assert_one_error_line(&r, "tls.cert_file");
    let r = run(&[
        "master",
        "start",
        "--data-dir",
        &path(d, "data"),
        "--listen",
        &format!("127.0.0.1:{}", common::free_port()),
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &missing,
    ]);
    assert_one_error_line(&r, &missing);

    // An agent: the same.
    let r = run(&[
        "--masters",
        "127.0.0.1:1",
        "agent",
        "start",
        "--id",
        "a1",
        "--work-dir",
        &path(d, "a1"),
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &missing,
    ]);
    assert_one_error_line(&r, &missing);
}
