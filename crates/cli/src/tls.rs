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

pub fn run(cmd: TlsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TlsCmd::Ca(TlsCaCmd::Create(args)) => create_ca(&args)?,
        TlsCmd::Cert(TlsCertCmd::Create(args)) => create_cert(&args)?,
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
