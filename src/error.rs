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
    /// A file that a config key or flag names could not be used: `file` (an [`Error::Io`] or
    /// [`Error::Data`]) says which file and why. The text holds the cause once; the cause is
    /// not repeated as a source.
    #[error("{key}: {file}")]
    File { key: String, file: Box<Error> },
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

    /// A file error (I/O or contents) as the problem of the config key or flag `key` that
    /// named the file; other errors pass through unchanged (they name their own key).
    pub fn for_file_key(self, key: impl Into<String>) -> Self {
        match self {
            Error::Io { .. } | Error::Data { .. } => Error::File {
                key: key.into(),
                file: Box::new(self),
            },
            other => other,
        }
    }

    /// The config key or flag the error names, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Config { key, .. } | Error::File { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. } | Error::Data { path, .. } => Some(path),
            Error::File { file, .. } => file.path(),
            _ => None,
        }
    }

    /// The whole message: this error's text, then each cause in its source chain that the
    /// text does not already hold (an [`Error::Io`] shows its cause in its own text, so the
    /// cause is printed once).
    pub fn full_message(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let cause = s.to_string();
            if !text.contains(&cause) {
                text.push_str(&format!("; caused by: {cause}"));
            }
            source = s.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_the_key_and_their_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = Error::io("x.npy", io).for_file_key("data.path");
        assert_eq!(e.key(), Some("data.path"));
        assert_eq!(e.path(), Some(std::path::Path::new("x.npy")));
        let text = e.full_message();
        assert_eq!(text, "data.path: x.npy: No such file");
        assert_eq!(text.matches("No such file").count(), 1);
        // Errors that name their own key keep it.
        let c = Error::config("measurement.sigma", "too small").for_file_key("data.path");
        assert_eq!(c.key(), Some("measurement.sigma"));
    }
}
