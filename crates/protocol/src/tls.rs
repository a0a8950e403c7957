//! Mutual TLS for every Taurus channel: client↔master, agent↔master and master↔master.
//!
//! Every process is configured with three PEM files ([`TlsFiles`]): the cluster's CA
//! certificate, its own certificate and its own private key. Servers (masters) require a client
//! certificate signed by that CA on every connection ([`TlsFiles::server_config`]); clients
//! (the CLI, agents, and masters talking to each other) trust only that CA and present their own
//! certificate ([`TlsFiles::client_config`]). [`endpoint`] checks the server's name against the
//! host part of the address dialled, so a certificate for another host is refused.
//!
//! **Certificate convention** (authorisation reads it; `taurus tls` and [`generate`] make it):
//! every leaf certificate's Subject is `CN=<name>, OU=<role>, O=taurus` with role one of
//! `master`, `agent`, `client`. Master certificates carry EKU serverAuth and clientAuth (they
//! serve, and dial their peers) and the SANs DNS `<name>`, DNS `localhost`, IP `127.0.0.1`
//! plus any extra ones; agent and client certificates carry EKU clientAuth and SAN DNS `<name>`.
//! The CA's Subject is `CN=<ca name>, O=taurus`.
//!
//! With TLS on, addresses are dialled as `https://host:port`.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde::Serialize;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;
use tonic::transport::ServerTlsConfig;

/// How long a server waits for a client to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The three PEM files of one TLS identity: the `[tls]` section of master and agent
/// configuration files, and the CLI's `--ca`/`--cert`/`--key`. All three are needed: a key
/// left out of a file or flags is an empty path, which [`TlsFiles::missing_key`] names (so
/// that configuration checks can say which one is missing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// The CA certificate(s) peers must be signed by.
    pub ca_file: PathBuf,
    /// This process's certificate (chain), signed by the CA.
    pub cert_file: PathBuf,
    /// The private key of `cert_file`.
    pub key_file: PathBuf,
}

/// What can go wrong reading TLS files, building TLS settings or making certificates. Every
/// message names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One of the three files is not given.
    #[error("{key}: not set (TLS needs all of ca_file, cert_file and key_file)")]
    Missing { key: &'static str },
    /// A file could not be read. (The I/O error is part of the message, not a `source`, so
    /// that error chains do not repeat it.)
    #[error("{key} {}: cannot read: {error}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("{key} {}: {reason}", path.display())]
    Parse {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The certificate and key (or the CA) cannot be used together.
    #[error("cert_file {} with key_file {}: not a usable TLS identity: {reason}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// An address that cannot be dialled with TLS.
    #[error("address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    /// A name or subject alternative name not allowed in a certificate.
    #[error("{what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// A file to be written exists already.
    #[error("{} exists already; not overwriting it (--force overwrites)", path.display())]
    Exists { path: PathBuf },
    /// A file could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },
}

/// The PEM contents of a [`TlsFiles`], each checked to hold what it should.
struct Loaded {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        key,
        path: path.to_path_buf(),
        error,
    })
}

/// Checks that `pem` holds at least one certificate and nothing malformed.
fn check_certs(key: &'static str, path: &Path, pem: &[u8]) -> Result<(), TlsError> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| TlsError::Parse {
            key,
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::Parse {
            key,
            path: path.to_path_buf(),
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        });
    }
    Ok(())
}

impl TlsFiles {
    /// Overlays command-line or environment values on a `[tls]` section from a file: each given
    /// path replaces the file's value. A path given neither here nor in the file stays empty
    /// ([`TlsFiles::missing_key`] names it). `None` when there is TLS in neither.
    pub fn overlay(
        file: Option<TlsFiles>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Option<TlsFiles> {
        if ca.is_none() && cert.is_none() && key.is_none() {
            return file;
        }
        let mut tls = file.unwrap_or_default();
        if let Some(v) = ca {
            tls.ca_file = v;
        }
        if let Some(v) = cert {
            tls.cert_file = v;
        }
        if let Some(v) = key {
            tls.key_file = v;
        }
        Some(tls)
    }

    /// The first of `ca_file`, `cert_file`, `key_file` left empty, if any.
    pub fn missing_key(&self) -> Option<&'static str> {
        [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ]
        .into_iter()
        .find(|(_, p)| p.as_os_str().is_empty())
        .map(|(k, _)| k)
    }

    /// The three files in `dir`: `ca.crt`, `<stem>.crt` and `<stem>.key` (the names
    /// `taurus tls` writes).
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        Self {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join(format!("{stem}.crt")),
            key_file: dir.join(format!("{stem}.key")),
        }
    }

    /// Reads the three files and checks each holds what it should.
    fn load(&self) -> Result<Loaded, TlsError> {
        if let Some(key) = self.missing_key() {
            return Err(TlsError::Missing { key });
        }
        let ca = read("ca_file", &self.ca_file)?;
        check_certs("ca_file", &self.ca_file, &ca)?;
        let cert = read("cert_file", &self.cert_file)?;
        check_certs("cert_file", &self.cert_file, &cert)?;
        let key = read("key_file", &self.key_file)?;
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsError::Parse {
            key: "key_file",
            path: self.key_file.clone(),
            reason: match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no PEM private key (-----BEGIN PRIVATE KEY-----) in it".into()
                }
                e => format!("malformed PEM: {e}"),
            },
        })?;
        Ok(Loaded { ca, cert, key })
    }

    fn identity_error(&self, e: &(dyn std::error::Error + 'static)) -> TlsError {
        TlsError::Identity {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            reason: error_chain(e),
        }
    }

    /// Server settings: our certificate, and a client certificate signed by the CA required on
    /// every connection. Checked now, so a bad file is reported at start.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let l = self.load()?;
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&l.cert, &l.key))
            .client_ca_root(Certificate::from_pem(&l.ca))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT);
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| self.identity_error(&e))?;
        Ok(config)
    }

    /// Client settings: trust only the CA, present our certificate. The server name to check is
    /// set per address by [`endpoint`]. Checked now, so a bad file is reported at start.
    pub fn client_config(&self) -> Result<ClientTlsConfig, TlsError> {
        let l = self.load()?;
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&l.ca))
            .identity(Identity::from_pem(&l.cert, &l.key));
        Endpoint::from_static("https://localhost:1")
            .tls_config(config.clone())
            .map_err(|e| self.identity_error(&e))?;
        Ok(config)
    }
}

/// An error and its sources on one line (tonic's transport errors hide the cause in `source`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// `host:port` of an address given as `host:port`, `http://host:port` or `https://host:port`
/// (a trailing `/` is ignored).
pub fn authority(addr: &str) -> &str {
    let s = addr.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.strip_suffix('/').unwrap_or(s)
}

/// The host part of an address (see [`authority`]), without the brackets of an IPv6 host:
/// the name a server's certificate must carry.
pub fn host(addr: &str) -> Result<&str, TlsError> {
    let authority = authority(addr);
    let bad = |reason: &str| TlsError::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let (host, _port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad("missing port; use HOST:PORT"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad("missing host; use HOST:PORT"));
    }
    Ok(host)
}

/// An endpoint for `addr`: `https://host:port` with `tls` (the server's certificate must name
/// `host`), or `http://host:port` without. Timeouts and the like are left to the caller.
pub fn endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, TlsError> {
    let bad = |e: &dyn std::error::Error| TlsError::Address {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    match tls {
        None => {
            let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
                addr.to_string()
            } else {
                format!("http://{addr}")
            };
            Endpoint::from_shared(uri).map_err(|e| bad(&e))
        }
        Some(tls) => {
            let host = host(addr)?;
            let uri = format!("https://{}", authority(addr));
            Endpoint::from_shared(uri)
                .and_then(|e| e.tls_config(tls.clone().domain_name(host)))
                .map_err(|e| bad(&e))
        }
    }
}

/// Certificate generation for `taurus tls` and for tests (feature `gen`).
#[cfg(feature = "gen")]
pub mod generate {
    use std::io::Write as _;
    use std::net::IpAddr;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::path::Path;
    use std::path::PathBuf;

    use rcgen::BasicConstraints;
    use rcgen::CertificateParams;
    use rcgen::DistinguishedName;
    use rcgen::DnType;
    use rcgen::ExtendedKeyUsagePurpose;
    use rcgen::IsCa;
    use rcgen::Issuer;
    use rcgen::KeyPair;
    use rcgen::KeyUsagePurpose;
    use rcgen::SanType;

    use super::TlsError;
    use super::TlsFiles;

    /// The `O` of every Taurus certificate.
    pub const ORGANIZATION: &str = "taurus";
    /// Default validity of a CA, in days (10 years).
    pub const DEFAULT_CA_DAYS: u32 = 3650;
    /// Default validity of a master, agent or client certificate, in days.
    pub const DEFAULT_CERT_DAYS: u32 = 365;

    /// What a certificate's holder is: its Subject's `OU`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Role {
        Master,
        Agent,
        Client,
    }

    impl Role {
        /// The `OU` value.
        pub fn as_str(self) -> &'static str {
            match self {
                Role::Master => "master",
                Role::Agent => "agent",
                Role::Client => "client",
            }
        }
    }

    /// A certificate and its private key, PEM.
    #[derive(Clone)]
    pub struct Pem {
        pub cert: String,
        pub key: String,
    }

    impl std::fmt::Debug for Pem {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Pem")
                .field("cert", &self.cert)
                .finish_non_exhaustive()
        }
    }

    fn gen_err(e: rcgen::Error) -> TlsError {
        TlsError::Generate(e.to_string())
    }

    /// Names of certificate holders (CN and DNS SAN): `[A-Za-z0-9._-]`, 1 to 128 bytes, not
    /// starting with `.` or `-`. Such names are valid agent ids and DNS names alike.
    pub fn check_name(name: &str) -> Result<(), TlsError> {
        let bad = |reason: &str| TlsError::InvalidName {
            what: "name",
            value: name.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() || name.len() > 128 {
            return Err(bad("must be 1 to 128 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
        }
        if name.starts_with(['.', '-']) {
            return Err(bad("must not start with '.' or '-'"));
        }
        Ok(())
    }

    /// A subject alternative name from a `--san` value: an IP address, or else a DNS name.
    fn san(value: &str) -> Result<SanType, TlsError> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(SanType::IpAddress(ip));
        }
        let bad = |reason: String| TlsError::InvalidName {
            what: "subject alternative name",
            value: value.to_string(),
            reason,
        };
        let ok_label = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        };
        let rest = value.strip_prefix("*.").unwrap_or(value);
        if value.len() > 253 || !rest.split('.').all(ok_label) {
            return Err(bad("neither an IP address nor a DNS name".into()));
        }
        Ok(SanType::DnsName(
            value.try_into().map_err(|e: rcgen::Error| bad(e.to_string()))?,
        ))
    }

    fn validity(params: &mut CertificateParams, days: u32) -> Result<(), TlsError> {
        if days == 0 {
            return Err(TlsError::InvalidName {
                what: "days",
                value: "0".into(),
                reason: "a certificate must be valid for at least one day".into(),
            });
        }
        let now = time::OffsetDateTime::now_utc();
        // An hour back: a peer whose clock is a little behind still accepts a fresh certificate.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(days));
        Ok(())
    }

    fn serial(params: &mut CertificateParams, key: &KeyPair) {
        // Unique per key pair (keys are fresh and random): a hash of the public key, as a
        // positive 20-byte integer.
        let mut bytes = params.key_identifier(key);
        bytes.truncate(20);
        if let Some(first) = bytes.first_mut() {
            *first &= 0x7f;
        }
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&bytes));
    }

    /// A new CA: a self-signed certificate (`CN=<name>, O=taurus`) that may sign leaf
    /// certificates only, valid for `days`.
    pub fn ca(name: &str, days: u32) -> Result<Pem, TlsError> {
        check_name(name)?;
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, ORGANIZATION);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days)?;
        serial(&mut params, &key);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// A leaf certificate for `name` in `role`, signed by `ca`, valid for `days`, following the
    /// convention of the [module](super) docs. `extra_sans` (IP addresses or DNS names) are
    /// added to a master's SANs and refused for other roles.
    pub fn leaf(ca: &Pem, role: Role, name: &str, extra_sans: &[String], days: u32) -> Result<Pem, TlsError> {
        check_name(name)?;
        if role != Role::Master && !extra_sans.is_empty() {
            return Err(TlsError::InvalidName {
                what: "subject alternative name",
                value: extra_sans.join(","),
                reason: "only master certificates take extra names (--san)".into(),
            });
        }
        let ca_key = KeyPair::from_pem(&ca.key).map_err(|e| TlsError::Generate(format!("CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)
            .map_err(|e| TlsError::Generate(format!("CA certificate: {e}")))?;
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::OrganizationName, ORGANIZATION);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let mut sans = vec![san(name)?];
        params.extended_key_usages = match role {
            Role::Master => {
                sans.push(san("localhost")?);
                sans.push(san("127.0.0.1")?);
                for s in extra_sans {
                    sans.push(san(s.trim())?);
                }
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            }
            Role::Agent | Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let mut unique = Vec::with_capacity(sans.len());
        for s in sans {
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        params.subject_alt_names = unique;
        validity(&mut params, days)?;
        serial(&mut params, &key);
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// Writes `contents` to a new file at `path`, mode 0600 when `private` (else 0644). An
    /// existing file is an error unless `force`, which replaces it.
    pub fn write_file(path: &Path, contents: &str, private: bool, force: bool) -> Result<(), TlsError> {
        let werr = |error| TlsError::Write {
            path: path.to_path_buf(),
            error,
        };
        if path.exists() {
            if !force {
                return Err(TlsError::Exists {
                    path: path.to_path_buf(),
                });
            }
            // Removed, not truncated: the new file gets the new mode even if the old had another.
            std::fs::remove_file(path).map_err(werr)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(path)
            .map_err(werr)?;
        file.write_all(contents.as_bytes()).map_err(werr)?;
        file.sync_all().map_err(werr)
    }

    /// Where `taurus tls` puts a certificate and its key in `dir`: `<stem>.crt` and
    /// `<stem>.key`.
    pub fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")))
    }

    /// The file stem of a leaf certificate: `<role>-<name>`, or just `<name>` when it starts
    /// with `<role>-` already (`--agent agent-1` writes `agent-1.crt`, not `agent-agent-1.crt`).
    pub fn stem(role: Role, name: &str) -> String {
        let prefix = format!("{}-", role.as_str());
        if name.starts_with(&prefix) {
            name.to_string()
        } else {
            format!("{prefix}{name}")
        }
    }

    /// Writes `pem` as `<stem>.crt` and `<stem>.key` (0600) in `dir`, checking both are free
    /// first (unless `force`). Returns the paths written.
    pub fn write_pair(
        dir: &Path,
        stem: &str,
        pem: &Pem,
        force: bool,
    ) -> Result<(PathBuf, PathBuf), TlsError> {
        let (cert, key) = paths(dir, stem);
        if !force {
            for p in [&cert, &key] {
                if p.exists() {
                    return Err(TlsError::Exists { path: p.clone() });
                }
            }
        }
        write_file(&cert, &pem.cert, false, force)?;
        write_file(&key, &pem.key, true, force)?;
        Ok((cert, key))
    }

    /// A CA, one certificate per `(role, name)` and their files in `dir` (`ca.crt`, `ca.key`,
    /// `<role>-<name>.crt|key`): what tests and `taurus dev` need. Existing files are an error
    /// unless `force`. Returns the files of each holder, in the order given.
    pub fn write_set(dir: &Path, holders: &[(Role, &str)], force: bool) -> Result<Vec<TlsFiles>, TlsError> {
        let ca = ca("taurus-ca", DEFAULT_CA_DAYS)?;
        let (ca_file, _) = write_pair(dir, "ca", &ca, force)?;
        let mut files = Vec::with_capacity(holders.len());
        for &(role, name) in holders {
            let pem = leaf(&ca, role, name, &[], DEFAULT_CERT_DAYS)?;
            let (cert_file, key_file) = write_pair(dir, &stem(role, name), &pem, force)?;
            files.push(TlsFiles {
                ca_file: ca_file.clone(),
                cert_file,
                key_file,
            });
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_every_address_form() {
        for (addr, want) in [
            ("127.0.0.1:7101", "127.0.0.1"),
            ("http://m1.example:7101", "m1.example"),
            ("https://m1.example:7101/", "m1.example"),
            ("[::1]:7101", "::1"),
            ("https://[::1]:7101", "::1"),
        ] {
            assert_eq!(host(addr).expect(addr), want, "{addr}");
        }
        assert!(host("nohost").is_err());
        assert!(host(":7101").is_err());
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = std::env::temp_dir().join(format!("taurus-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let files = TlsFiles::in_dir(&dir, "nobody");
        let e = files.client_config().expect_err("no files").to_string();
        assert!(
            e.contains("ca_file") && e.contains("ca.crt") && e.contains("cannot read"),
            "{e}"
        );

        std::fs::write(dir.join("ca.crt"), "not a certificate").expect("write");
        let e = files.server_config().expect_err("garbage CA").to_string();
        assert!(e.contains("ca_file") && e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
