//! Errors of the GPU layer. Every shape, dtype or size problem is reported as a value,
//! never as a panic, so the CLI can turn it into a clear message and exit code 2.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    /// Operands of an op do not fit together (the op and the problem are named).
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    /// An operand has a dtype the op does not accept.
    #[error("{op}: {message}")]
    DType { op: &'static str, message: String },

    /// A tensor is larger than the device allows in one binding or buffer.
    #[error(
        "{what} needs {bytes} bytes, more than this device's limit of {limit} bytes ({limit_name}); \
         use a smaller batch or resolution, or a device with larger limits"
    )]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        limit_name: &'static str,
    },

    /// No adapter, or the requested one does not exist.
    #[error("{0}")]
    NoAdapter(String),

    /// The device refused something (device lost, out of memory, validation error).
    #[error("GPU error: {0}")]
    Device(String),

    /// A WGSL source failed to parse or validate; the message names the shader file and line.
    #[error("shader {file}:{line}: {message}")]
    Shader {
        file: String,
        line: usize,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// Shorthand for a shape error.
pub fn shape_err<T>(op: &'static str, message: impl Into<String>) -> Result<T> {
    Err(KernelError::Shape {
        op,
        message: message.into(),
    })
}
