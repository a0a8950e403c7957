//! Errors of the master crate. Converted to `tonic::Status` only in `service`.

/// The one error enum of this crate.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("configuration: {0}")]
    Config(String),
    /// Shown as the store's own message (it names the data dir), once: as `transparent`, an
    /// `anyhow` chain (`{:#}`) does not repeat it.
    #[error(transparent)]
    Store(#[from] taurus_store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Serve(String),
    /// A `[tls]` file that cannot be used (the message names the key and the file; the TLS
    /// error is the message, not a `source`, so that error chains do not repeat it).
    #[error("tls.{0}")]
    Tls(taurus_protocol::tls::TlsError),
}

impl From<taurus_protocol::tls::TlsError> for MasterError {
    fn from(e: taurus_protocol::tls::TlsError) -> Self {
        Self::Tls(e)
    }
}
