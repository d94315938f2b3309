//! Application errors and their exit codes: 2 for bad input or usage (the message names the
//! problem), 1 for everything else.

use std::path::{Path, PathBuf};

use noiseshift_kernels::KernelError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The user's input is wrong: a file, a flag, a shape. Exit code 2.
    #[error("{0}")]
    Input(String),

    /// Reading an input file failed.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Writing an output failed. Exit code 1.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Kernel(#[from] KernelError),

    /// Anything else that went wrong. Exit code 1.
    #[error("{0}")]
    Failure(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) | Error::Read { .. } => 2,
            Error::Kernel(k) => match k {
                KernelError::Shape { .. }
                | KernelError::DType { .. }
                | KernelError::TooLarge { .. }
                | KernelError::NoAdapter(_) => 2,
                KernelError::Device(_) | KernelError::Shader { .. } => 1,
            },
            Error::Write { .. } | Error::Failure(_) => 1,
        }
    }

    pub fn read(path: &Path, source: std::io::Error) -> Error {
        Error::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Shorthand for an input error.
pub fn input<T>(message: impl Into<String>) -> Result<T> {
    Err(Error::Input(message.into()))
}
