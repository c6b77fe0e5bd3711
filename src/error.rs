//! The one error type of the crate: every fallible call returns [`Result`].

use std::fmt;

/// Everything that can go wrong in geopath, with a message that names the cause.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Two operands (or an operand and an op) disagree on shape; both shapes are named.
    Shape {
        /// The op that checked the shapes.
        op: &'static str,
        /// What was expected and what was given.
        detail: String,
    },
    /// A tensor would not fit in one storage binding of the adapter.
    TooLarge {
        /// The op (or allocation) that asked for it.
        op: &'static str,
        /// Bytes asked for.
        bytes: u64,
        /// The adapter's `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// The GPU device reported an error while an op was recorded or run.
    Device {
        /// The op during which the device complained.
        op: String,
        /// The device's message.
        message: String,
    },
    /// No adapter matched the requested device selection.
    NoAdapter(String),
    /// Tensors live on different devices.
    DeviceMismatch(&'static str),
    /// A bad argument that is not a shape (e.g. a negative stride or an unknown name).
    Invalid(String),
    /// File or parse error.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, detail } => write!(f, "{op}: shape mismatch: {detail}"),
            Error::TooLarge { op, bytes, limit } => {
                write!(f, "{op}: tensor of {bytes} bytes exceeds the adapter's storage-binding limit of {limit} bytes")
            }
            Error::Device { op, message } => write!(f, "{op}: device error: {message}"),
            Error::NoAdapter(m) => write!(f, "no usable adapter: {m}"),
            Error::DeviceMismatch(op) => write!(f, "{op}: operands live on different devices"),
            Error::Invalid(m) => write!(f, "{m}"),
            Error::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds a shape error naming `op` and both shapes.
pub fn shape_err(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Shape { op, detail: detail.into() }
}
