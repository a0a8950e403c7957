//! Who a peer certificate says its holder is.
//!
//! Convention (the certificates `taurus tls cert create` makes): subject `CN=<name>`,
//! `OU=<role>` with role `master`, `agent` or `client`, `O=taurus`. The CA that signed the
//! certificate was already checked by the TLS handshake; this only reads the subject. A
//! certificate without exactly one CN and one known OU carries no identity.

use x509_parser::prelude::FromDer;
use x509_parser::prelude::X509Certificate;

/// The role a certificate's `OU` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    Master,
    Agent,
    Client,
}

/// The identity a certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    pub role: CertRole,
    /// The subject's CN.
    pub name: String,
}

/// Reads the identity of a DER certificate; `None` when it is malformed or its subject does
/// not follow the convention.
pub fn cert_identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let one = |mut it: Box<dyn Iterator<Item = Option<String>> + '_>| -> Option<String> {
        let first = it.next()??;
        it.next().is_none().then_some(first)
    };
    let name = one(Box::new(
        subject
            .iter_common_name()
            .map(|a| a.as_str().ok().map(str::to_string)),
    ))?;
    let ou = one(Box::new(
        subject
            .iter_organizational_unit()
            .map(|a| a.as_str().ok().map(str::to_string)),
    ))?;
    let role = match ou.as_str() {
        "master" => CertRole::Master,
        "agent" => CertRole::Agent,
        "client" => CertRole::Client,
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some(CertIdentity { role, name })
}

/// The identity of the leaf certificate the peer of `req` presented (TLS connections only).
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<CertIdentity> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    cert_identity(leaf.as_ref())
}

/// Whether the peer of `req` presented any certificate at all.
pub fn has_peer_cert<T>(req: &tonic::Request<T>) -> bool {
    req.peer_certs().is_some_and(|c| !c.is_empty())
}
