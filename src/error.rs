//! The one error type of paradec. Every variant carries a message that names what was wrong
//! (the tensor, field, shape or setting), so that callers — and the C ABI — can report it.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong. The variant decides the C status code (see `capi`), the text says where.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An argument or a tensor is malformed: wrong shape, dtype, length, out-of-range setting.
    BadInput(String),
    /// A file (safetensors, config.json, quantized tensors) is malformed or inconsistent.
    BadFormat(String),
    /// Valid input that paradec deliberately does not run (names the feature or field).
    Unsupported(String),
    /// A required tensor or file is missing.
    NotFound(String),
    /// An I/O failure, with the path involved.
    Io(String),
    /// A KV cache or workspace is too small for the request.
    CapacityExceeded(String),
    /// A CUDA call failed: the error name and the operation that failed.
    Cuda {
        /// The operation, with its arguments where they help (e.g. `cudaMalloc(4096 bytes)`).
        op: String,
        /// The CUDA error's name (e.g. `cudaErrorMemoryAllocation`).
        name: String,
    },
    /// Memory (device or host) could not be allocated.
    OutOfMemory(String),
    /// No usable CUDA driver or device (or the crate was built without the `cuda` feature).
    NoDevice(String),
}

impl Error {
    /// A `BadInput` error.
    pub fn bad_input(msg: impl Into<String>) -> Self {
        Error::BadInput(msg.into())
    }
    /// A `BadFormat` error.
    pub fn bad_format(msg: impl Into<String>) -> Self {
        Error::BadFormat(msg.into())
    }
    /// An `Unsupported` error.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }
    /// A `NotFound` error.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadInput(m) => write!(f, "bad input: {m}"),
            Error::BadFormat(m) => write!(f, "malformed file: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Io(m) => write!(f, "I/O error: {m}"),
            Error::CapacityExceeded(m) => write!(f, "capacity exceeded: {m}"),
            Error::Cuda { op, name } => write!(f, "CUDA error {name} in {op}"),
            Error::OutOfMemory(m) => write!(f, "out of memory: {m}"),
            Error::NoDevice(m) => write!(f, "no CUDA device: {m}"),
        }
    }
}

impl std::error::Error for Error {}
