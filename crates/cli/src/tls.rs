//! `taurus tls ca create` and `taurus tls cert create`: the files mutual TLS needs.
//!
//! The certificates follow the convention of `taurus_protocol::tls` (`CN=<name>, OU=<role>,
//! O=taurus`; masters serve and dial, agents and clients only dial), which authorisation reads.
//! Keys are written with mode 0600, and nothing is overwritten without `--force`.

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use taurus_protocol::tls::generate;
use taurus_protocol::tls::generate::Role;

use crate::args::TlsCaCmd;
use crate::args::TlsCaCreateArgs;
use crate::args::TlsCertCmd;
use crate::args::TlsCertCreateArgs;
use crate::args::TlsCmd;
use crate::args::TlsInitArgs;

pub fn run(cmd: TlsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TlsCmd::Ca(TlsCaCmd::Create(args)) => create_ca(&args)?,
        TlsCmd::Cert(TlsCertCmd::Create(args)) => create_cert(&args)?,
        TlsCmd::Init(args) => init(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--dir: cannot create {}", dir.display()))
}

fn create_ca(args: &TlsCaCreateArgs) -> anyhow::Result<()> {
    create_dir(&args.dir)?;
    let ca = generate::ca(&args.name, args.days).context("--name/--days")?;
    let (cert, key) = generate::write_pair(&args.dir, "ca", &ca, args.force)?;
    println!(
        "wrote {} (the CA certificate: every master, agent and client needs it)",
        cert.display()
    );
    println!(
        "wrote {} (the CA key, mode 0600: keep it secret, it makes members)",
        key.display()
    );
    Ok(())
}

/// The role and name of `--master|--agent|--client NAME` (clap makes exactly one present).
fn role_and_name(args: &TlsCertCreateArgs) -> anyhow::Result<(Role, &str)> {
    match (&args.master, &args.agent, &args.client) {
        (Some(n), None, None) => Ok((Role::Master, n)),
        (None, Some(n), None) => Ok((Role::Agent, n)),
        (None, None, Some(n)) => Ok((Role::Client, n)),
        _ => anyhow::bail!("give exactly one of --master, --agent and --client"),
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
}

fn create_cert(args: &TlsCertCreateArgs) -> anyhow::Result<()> {
    let (role, name) = role_and_name(args)?;
    let ca_cert: PathBuf = args.ca_cert.clone().unwrap_or_else(|| args.dir.join("ca.crt"));
    let ca_key: PathBuf = args.ca_key.clone().unwrap_or_else(|| args.dir.join("ca.key"));
    let ca = generate::Pem {
        cert: read("--ca-cert", &ca_cert)?,
        key: read("--ca-key", &ca_key)?,
    };
    let pem = generate::leaf(&ca, role, name, &args.san, args.days).with_context(|| {
        format!(
            "cannot make a {} certificate with the CA {} and {}",
            role.as_str(),
            ca_cert.display(),
            ca_key.display()
        )
    })?;
    create_dir(&args.dir)?;
    let (cert, key) = generate::write_pair(&args.dir, &generate::stem(role, name), &pem, args.force)?;
    println!("wrote {}", cert.display());
    println!("wrote {} (mode 0600)", key.display());
    let (ca, cert, key) = (ca_cert.display(), cert.display(), key.display());
    match role {
        Role::Master => {
            println!("use: taurus master start --tls-ca {ca} --tls-cert {cert} --tls-key {key} ...")
        }
        Role::Agent => println!(
            "use: taurus agent start --id {name} --tls-ca {ca} --tls-cert {cert} --tls-key {key} ..."
        ),
        Role::Client => println!("use: export TAURUS_CA={ca} TAURUS_CERT={cert} TAURUS_KEY={key}"),
    }
    Ok(())
}

/// `taurus tls init`: the CA and every named certificate, each made only if missing.
fn init(args: &TlsInitArgs) -> anyhow::Result<()> {
    create_dir(&args.dir)?;
    let (ca_cert, ca_key) = generate::paths(&args.dir, "ca");
    let ca = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            println!("kept {} (exists)", ca_cert.display());
            generate::Pem {
                cert: read("CA certificate", &ca_cert)?,
                key: read("CA key", &ca_key)?,
            }
        }
        (false, false) => {
            let ca = generate::ca("taurus-ca", args.ca_days).context("--ca-days")?;
            generate::write_pair(&args.dir, "ca", &ca, false)?;
            println!(
                "wrote {} and {} (key mode 0600)",
                ca_cert.display(),
                ca_key.display()
            );
            ca
        }
        (true, false) => anyhow::bail!(
            "{} exists without {}: make both anew (remove the certificate) or restore the key",
            ca_cert.display(),
            ca_key.display()
        ),
        (false, true) => anyhow::bail!(
            "{} exists without {}: restore the certificate or remove the key",
            ca_key.display(),
            ca_cert.display()
        ),
    };
    let holders = args
        .master
        .iter()
        .map(|n| (Role::Master, n))
        .chain(args.agent.iter().map(|n| (Role::Agent, n)))
        .chain(args.client.iter().map(|n| (Role::Client, n)));
    for (role, name) in holders {
        let name = name.trim();
        let stem = generate::stem(role, name);
        let (cert, key) = generate::paths(&args.dir, &stem);
        match (cert.exists(), key.exists()) {
            (true, true) => {
                println!("kept {} (exists)", cert.display());
                continue;
            }
            (false, false) => {}
            _ => anyhow::bail!(
                "only one of {} and {} exists: remove it to make a new pair",
                cert.display(),
                key.display()
            ),
        }
        let sans: &[String] = if role == Role::Master { &args.san } else { &[] };
        let pem = generate::leaf(&ca, role, name, sans, args.days)
            .with_context(|| format!("cannot make the {} certificate of {name:?}", role.as_str()))?;
        generate::write_pair(&args.dir, &stem, &pem, false)?;
        println!("wrote {} and {} (key mode 0600)", cert.display(), key.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn init_args(dir: PathBuf) -> TlsInitArgs {
        TlsInitArgs {
            dir,
            master: vec!["master-1".into(), "master-2".into()],
            agent: vec!["agent-1".into()],
            client: vec!["admin".into()],
            san: vec!["10.0.0.1".into()],
            ca_days: 30,
            days: 10,
        }
    }

    #[test]
    fn init_makes_what_is_missing_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = init_args(dir.path().to_path_buf());
        init(&args).expect("first run");
        let files = [
            "ca.crt",
            "ca.key",
            "master-1.crt",
            "master-2.key",
            "agent-1.crt",
            "client-admin.key",
        ];
        for f in files {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        let before = std::fs::read(dir.path().join("master-1.crt")).expect("read");
        let ca_before = std::fs::read(dir.path().join("ca.crt")).expect("read");
        std::fs::remove_file(dir.path().join("agent-1.crt")).expect("rm");
        std::fs::remove_file(dir.path().join("agent-1.key")).expect("rm");
        init(&args).expect("second run");
        assert_eq!(
            std::fs::read(dir.path().join("master-1.crt")).expect("read"),
            before
        );
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).expect("read"), ca_before);
        assert!(dir.path().join("agent-1.crt").exists(), "remade with the same CA");
        std::fs::remove_file(dir.path().join("master-2.key")).expect("rm");
        let e = init(&args).expect_err("half a pair").to_string();
        assert!(e.contains("master-2"), "{e}");
    }
}
