//! One error type for the library. Every variant names what was wrong (a file, a config key,
//! a command-line argument) and, where there is one, the fix: errors read like advice.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its contents are wrong (bad magic, truncated, wrong shape, NaN…).
    #[error("{path}: {problem}")]
    Data { path: PathBuf, problem: String },
    /// A configuration key (TOML key or command-line flag) has a bad value.
    #[error("{key}: {problem}")]
    Config { key: String, problem: String },
    /// Arguments that do not fit together (shapes, ranges) in a library call.
    #[error("{0}")]
    Input(String),
    /// The compute backend failed (GPU device lost, out of memory, shader validation).
    #[error("backend {backend}: {problem}")]
    Backend { backend: String, problem: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn data(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            problem: problem.into(),
        }
    }
    pub fn config(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            problem: problem.into(),
        }
    }
    pub fn input(problem: impl Into<String>) -> Self {
        Error::Input(problem.into())
    }
}
