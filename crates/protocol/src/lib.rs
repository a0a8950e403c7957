//! Taurus wire protocol: the code tonic/prost generate from `proto/`, plus conversions between
//! those generated types and the domain types of `taurus-core`.
//!
//! This crate is the only place where protobuf types and domain types meet. The state machine
//! never stores a prost type (so the wire schema and the on-disk format can evolve separately),
//! and services convert at their edge with the functions in [`convert`]. The internal
//! master-to-master schema (`taurus.internal.v1`) carries openraft messages as opaque bytes.

pub mod convert;
pub mod identity;
pub mod tls;
pub mod trace;

/// Public API, `taurus.v1`.
pub mod v1 {
    tonic::include_proto!("taurus.v1");
}

/// Master-to-master API, `taurus.internal.v1`.
pub mod internal {
    tonic::include_proto!("taurus.internal.v1");
}

/// Encoded file descriptor set of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("taurus_descriptor");

/// The one error enum of this crate: a protobuf value with no domain meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ProtocolError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field the error names.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } => field,
        }
    }
}
