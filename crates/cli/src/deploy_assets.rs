//! Tests of the deployment assets in `deploy/` and `config/3-hosts/`: the YAML parses, has the
//! structure the docs promise, and every `taurus` command line in it is one this CLI accepts
//! (parsed by the real clap definition and, for masters and agents, resolved into a validated
//! configuration). A unit test of the binary crate, because only here is the parser reachable.
//!
//! The compose file is run for real by `deploy/compose-test.sh` (Docker needed); these tests need
//! nothing but the files.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;

use clap::Parser;
use taurus_master::config::Exposure;
use taurus_protocol::tls::generate;
use taurus_protocol::tls::generate::Role;
use yaml_rust2::Yaml;
use yaml_rust2::YamlLoader;

use crate::Context;
use crate::args::AclCmd;
use crate::args::AgentCmd;
use crate::args::Cli;
use crate::args::Command;
use crate::args::MasterCmd;
use crate::args::TlsCmd;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML file, with `<<` merge keys applied (compose uses them; the
/// YAML 1.2 parser resolves the aliases but leaves merging to the application).
fn load(rel: &str) -> Vec<Yaml> {
    let docs = YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    docs.into_iter().map(merge_keys).collect()
}

fn merge_keys(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut merged = Vec::new();
            for (k, v) in h {
                if k.as_str() == Some("<<") {
                    match v {
                        Yaml::Array(list) => merged.extend(list),
                        other => merged.push(other),
                    }
                } else {
                    out.insert(k, merge_keys(v));
                }
            }
            for m in merged {
                if let Yaml::Hash(m) = merge_keys(m) {
                    for (k, v) in m {
                        out.entry(k).or_insert(v);
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {y:?}"))
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: not a list: {y:?}"))
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            other => panic!("{what}: not a scalar: {other:?}"),
        })
        .collect()
}

fn keys(y: &Yaml) -> BTreeSet<String> {
    y.as_hash()
        .map(|h| h.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `taurus ARGS...` through the real parser.
fn parse(args: &[String], what: &str) -> Cli {
    Cli::try_parse_from(std::iter::once("taurus".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("{what}: `taurus {}` does not parse: {e}", args.join(" ")))
}

fn context(cli: &Cli) -> Context {
    Context {
        masters: cli.masters.clone(),
        timeout: cli.timeout,
        json: cli.json,
        tls: None,
        token: None,
    }
}

/// The certificate and key files `taurus tls init` makes for these holders in `dir`.
fn pki_files(dir: &Path, holders: &[(Role, &String)]) -> BTreeSet<PathBuf> {
    let mut files: BTreeSet<PathBuf> = [dir.join("ca.crt"), dir.join("ca.key")].into();
    for (role, name) in holders {
        let (c, k) = generate::paths(dir, &generate::stem(*role, name));
        files.extend([c, k]);
    }
    files
}

const COMPOSE: &str = "deploy/docker-compose.yml";

#[test]
fn compose_has_three_masters_with_own_volumes_health_checks_and_restart_policies() {
    let docs = load(COMPOSE);
    assert_eq!(docs.len(), 1, "one document");
    let doc = &docs[0];
    let services = &doc["services"];
    let names = keys(services);
    for want in [
        "pki",
        "master-1",
        "master-2",
        "master-3",
        "bootstrap",
        "agent-1",
        "agent-2",
        "cli",
    ] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }
    let declared = keys(&doc["volumes"]);

    // pki: which files exist for the others to use.
    let pki = parse(&strings(&services["pki"]["command"], "pki"), "pki");
    let Command::Tls(TlsCmd::Init(init)) = pki.command else {
        panic!("pki does not run `tls init`")
    };
    assert_eq!(init.master, ["master-1", "master-2", "master-3"]);
    assert_eq!(init.agent, ["agent-1", "agent-2"]);
    let holders: Vec<(Role, &String)> = init
        .master
        .iter()
        .map(|n| (Role::Master, n))
        .chain(init.agent.iter().map(|n| (Role::Agent, n)))
        .chain(init.client.iter().map(|n| (Role::Client, n)))
        .collect();
    let made = pki_files(&init.dir, &holders);

    let mut data_volumes = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for i in 1..=3u64 {
        let name = format!("master-{i}");
        let svc = &services[name.as_str()];
        assert_eq!(s(&svc["restart"], &name), "unless-stopped", "{name}");
        assert_eq!(
            s(&svc["depends_on"]["pki"]["condition"], &name),
            "service_completed_successfully",
            "{name}"
        );
        // Its own named volume on the data directory.
        let volumes = strings(&svc["volumes"], &name);
        let data = volumes
            .iter()
            .find(|v| v.ends_with(":/var/lib/taurus"))
            .unwrap_or_else(|| panic!("{name}: no volume on /var/lib/taurus: {volumes:?}"));
        let volume = data.split(':').next().unwrap_or_default().to_string();
        assert!(declared.contains(&volume), "{name}: volume {volume} not declared");
        assert!(data_volumes.insert(volume), "{name}: data volume shared");

        let cli = parse(&strings(&svc["command"], &name), &name);
        let Command::Master(MasterCmd::Start(args)) = cli.command else {
            panic!("{name}: not `master start`")
        };
        let files = [&args.tls_ca, &args.tls_cert, &args.tls_key];
        for f in files.into_iter().flatten() {
            assert!(made.contains(f), "{name}: {} is not made by pki", f.display());
        }
        let config = crate::master::resolve_config(args).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(config.id, i, "{name}");
        assert!(ids.insert(config.id));
        assert_eq!(
            config.exposure().expect("valid"),
            Exposure::Secured,
            "{name}: TLS and auth"
        );
        assert_eq!(config.peers.len(), 3, "{name}");
        assert!(
            config.data_dir.starts_with("/var/lib/taurus"),
            "{name}: data_dir {} is not on the volume",
            config.data_dir.display()
        );
        for (id, addr) in &config.peers {
            assert_eq!(
                addr,
                &format!("master-{id}:7101"),
                "{name}: peers by service name"
            );
        }

        let test = strings(&svc["healthcheck"]["test"], &name);
        assert_eq!(
            test[..2],
            ["CMD", "taurus"],
            "{name}: exec form, no shell in the image"
        );
        let check = parse(&test[2..], &format!("{name} healthcheck"));
        assert!(
            matches!(check.command, Command::Health(_)),
            "{name}: healthcheck is not `health`"
        );
        for f in [&check.ca, &check.cert, &check.key] {
            let f = f
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: healthcheck without TLS"));
            assert!(made.contains(f), "{name}: {} is not made by pki", f.display());
        }
    }

    for i in 1..=2 {
        let name = format!("agent-{i}");
        let svc = &services[name.as_str()];
        assert_eq!(s(&svc["restart"], &name), "unless-stopped", "{name}");
        for m in 1..=3 {
            let cond = &svc["depends_on"][format!("master-{m}").as_str()]["condition"];
            assert_eq!(s(cond, &name), "service_healthy", "{name} waits for master-{m}");
        }
        let cli = parse(&strings(&svc["command"], &name), &name);
        let ctx = context(&cli);
        let Command::Agent(AgentCmd::Start(args)) = cli.command else {
            panic!("{name}: not `agent start`")
        };
        let config =
            crate::agent_start::resolve_config(&args, &ctx).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(config.id.as_deref(), Some(name.as_str()));
        assert_eq!(config.masters.len(), 3, "{name}: every master");
        let tls = config.tls.as_ref().unwrap_or_else(|| panic!("{name}: no TLS"));
        assert_eq!(
            tls.cert_file,
            generate::paths(&init.dir, &generate::stem(Role::Agent, &name)).0,
            "{name}: its certificate's CN must be its id"
        );
        assert!(
            made.contains(&tls.key_file) && made.contains(&tls.ca_file),
            "{name}"
        );
        let test = strings(&svc["healthcheck"]["test"], &name);
        assert_eq!(test[..2], ["CMD", "taurus"], "{name}");
        let check = parse(&test[2..], &format!("{name} healthcheck"));
        let Command::Health(h) = check.command else {
            panic!("{name}: healthcheck is not `health`")
        };
        let http = config.http.listen.map(|a| a.port());
        assert_eq!(
            h.http
                .as_deref()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(_, p)| p.parse().ok()),
            Some(http),
            "{name}: the healthcheck asks the agent's own HTTP port"
        );
    }

    // bootstrap writes the token the cli service reads.
    let boot = &services["bootstrap"];
    assert_eq!(
        s(&boot["depends_on"]["master-1"]["condition"], "bootstrap"),
        "service_healthy"
    );
    let cli = parse(&strings(&boot["command"], "bootstrap"), "bootstrap");
    let Command::Acl(AclCmd::Bootstrap {
        secret_file: Some(token_file),
        ..
    }) = cli.command
    else {
        panic!("bootstrap is not `acl bootstrap --secret-file`")
    };
    let tools = strings(&services["cli"]["profiles"], "cli");
    assert_eq!(tools, ["tools"], "cli only runs when asked for");
    let env = &services["cli"]["environment"];
    assert_eq!(Path::new(s(&env["TAURUS_TOKEN_FILE"], "cli")), token_file);
    for key in ["TAURUS_CA", "TAURUS_CERT", "TAURUS_KEY"] {
        assert!(made.contains(Path::new(s(&env[key], key))), "cli {key}");
    }
}

/// Every document of every YAML file under deploy/k8s/, by kind and name.
fn k8s_objects() -> BTreeMap<(String, String), Yaml> {
    let dir = repo().join("deploy/k8s");
    let mut objects = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let rel = format!(
            "deploy/k8s/{}",
            f.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        );
        for doc in load(&rel) {
            let kind = s(&doc["kind"], &rel).to_string();
            if kind == "Kustomization" {
                continue;
            }
            let name = s(&doc["metadata"]["name"], &rel).to_string();
            if kind != "Namespace" {
                assert_eq!(
                    s(&doc["metadata"]["namespace"], &rel),
                    "taurus",
                    "{rel}: {kind}/{name}"
                );
            }
            assert!(
                objects.insert((kind.clone(), name.clone()), doc).is_none(),
                "{kind}/{name} twice"
            );
        }
    }
    objects
}

#[test]
fn kubernetes_example_has_a_master_statefulset_with_storage_and_a_headless_service() {
    let objects = k8s_objects();
    let get = |kind: &str, name: &str| {
        objects
            .get(&(kind.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("{kind}/{name} missing; have {:?}", objects.keys()))
    };
    get("Namespace", "taurus");
    get("PodDisruptionBudget", "master");
    let masters = get("StatefulSet", "master");
    let spec = &masters["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(3));
    let headless = s(&spec["serviceName"], "serviceName");
    let svc = get("Service", headless);
    assert_eq!(s(&svc["spec"]["clusterIP"], "clusterIP"), "None", "headless");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));
    let claims = spec["volumeClaimTemplates"]
        .as_vec()
        .expect("volumeClaimTemplates");
    let claim = s(&claims[0]["metadata"]["name"], "claim");
    let container = &spec["template"]["spec"]["containers"][0];
    let mounts = container["volumeMounts"].as_vec().expect("volumeMounts");
    assert!(
        mounts
            .iter()
            .any(|m| m["name"].as_str() == Some(claim) && m["mountPath"].as_str() == Some("/var/lib/taurus")),
        "the claim holds the data directory"
    );
    let labels = &spec["selector"]["matchLabels"];
    assert_eq!(
        &spec["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        &labels["app.kubernetes.io/name"]
    );
    assert_eq!(
        &svc["spec"]["selector"], labels,
        "the headless Service selects the masters"
    );
    get("Service", "taurus");

    // The shared master.toml, with what the pod's command line adds, is a valid secure config
    // whose peers are the StatefulSet's pods through the headless Service.
    let config = get("ConfigMap", "taurus-config");
    let toml = s(&config["data"]["master.toml"], "master.toml");
    let master = taurus_master::MasterConfig::from_toml(toml)
        .expect("master.toml parses")
        .overlay(taurus_master::config::Overrides {
            id: Some(1),
            tls_ca: Some("/etc/taurus/tls/ca.crt".into()),
            tls_cert: Some("/etc/taurus/tls/master-0.crt".into()),
            tls_key: Some("/etc/taurus/tls/master-0.key".into()),
            ..Default::default()
        });
    master.validate().expect("master.toml + flags validate");
    assert_eq!(master.exposure().expect("valid"), Exposure::Secured);
    for (id, addr) in &master.peers {
        assert_eq!(addr, &format!("master-{}.{headless}:7101", id - 1), "peer {id}");
    }
    let script = strings(&container["args"], "master args").join(" ");
    for flag in [
        "--config /etc/taurus/master.toml",
        "--id",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
    ] {
        assert!(script.contains(flag), "master command lacks {flag}: {script}");
    }

    // Agents: stable names (their certificates' CN), the shared agent.toml, args that parse.
    let agents = get("StatefulSet", "agent");
    let toml = s(&config["data"]["agent.toml"], "agent.toml");
    let agent = taurus_agent::AgentConfig::from_toml(toml).expect("agent.toml parses");
    assert_eq!(agent.masters.len(), 3);
    let container = &agents["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = strings(&container["args"], "agent args")
        .into_iter()
        .map(|a| a.replace("$(POD_NAME)", "agent-0"))
        .collect();
    let cli = parse(&args, "k8s agent");
    let Command::Agent(AgentCmd::Start(a)) = cli.command else {
        panic!("k8s agent: not `agent start`")
    };
    assert_eq!(a.id.as_deref(), Some("agent-0"));
    assert_eq!(a.tls_cert, Some(PathBuf::from("/etc/taurus/tls/agent-0.crt")));

    // The kustomization lists every manifest.
    let kustomization = &load("deploy/k8s/kustomization.yaml")[0];
    let listed: BTreeSet<String> = strings(&kustomization["resources"], "resources")
        .into_iter()
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(repo().join("deploy/k8s"))
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn systemd_units_start_valid_command_lines_and_the_3_host_configs_parse() {
    for (unit, noun) in [
        ("deploy/systemd/taurus-master.service", "master"),
        ("deploy/systemd/taurus-agent.service", "agent"),
    ] {
        let text = read(unit);
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
        assert_eq!(words.remove(0), "/usr/local/bin/taurus", "{unit}");
        let cli = parse(&words, unit);
        match (noun, cli.command) {
            ("master", Command::Master(MasterCmd::Start(a))) => {
                assert_eq!(a.config, Some(PathBuf::from("/etc/taurus/master.toml")))
            }
            ("agent", Command::Agent(AgentCmd::Start(a))) => {
                assert_eq!(a.config, Some(PathBuf::from("/etc/taurus/agent.toml")))
            }
            (_, other) => panic!("{unit}: runs {other:?}"),
        }
        for key in [
            "Restart=on-failure",
            "LimitNOFILE=",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
        ] {
            assert!(text.lines().any(|l| l.starts_with(key)), "{unit}: no {key}");
        }
    }
    let master = read("deploy/systemd/taurus-master.service");
    for key in [
        "User=taurus",
        "StateDirectory=taurus",
        "ProtectSystem=strict",
        "ProtectHome=yes",
    ] {
        assert!(master.lines().any(|l| l == key), "master unit: no {key}");
    }
    // The 3-host configs the units read: the master's data_dir is in its StateDirectory, the
    // agent's work_dir in its.
    let m = taurus_master::MasterConfig::from_toml(&read("config/3-hosts/master.toml")).expect("master.toml");
    assert!(
        m.data_dir.starts_with("/var/lib/taurus/"),
        "{}",
        m.data_dir.display()
    );
    let a = taurus_agent::AgentConfig::from_toml(&read("config/3-hosts/agent.toml")).expect("agent.toml");
    assert_eq!(a.work_dir, Some(PathBuf::from("/var/lib/taurus-agent")));
    let agent_unit = read("deploy/systemd/taurus-agent.service");
    assert!(agent_unit.lines().any(|l| l == "StateDirectory=taurus-agent"));
    assert_eq!(
        a.masters,
        m.peers.values().cloned().collect::<Vec<_>>(),
        "agent dials every master"
    );
}

/// `systemd-analyze verify` on the units, when the machine has it (the Debian `systemd`
/// package); skipped, saying so, otherwise. The binary path is replaced by an existing one: the
/// check needs the executable to exist.
#[test]
fn systemd_analyze_verifies_the_units() {
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut units = Vec::new();
    for name in ["taurus-master.service", "taurus-agent.service"] {
        let text = read(&format!("deploy/systemd/{name}"));
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/taurus", &exe.display().to_string()),
        )
        .expect("write");
        units.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Complaints about these units name them; other lines (e.g. the host's own units) do not.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("taurus-")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
