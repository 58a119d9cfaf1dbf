use std::{io, net::SocketAddr, path::PathBuf};

/// What can go wrong while starting or running a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; names the flag and the value.
    #[error("{flag}: {message}")]
    Config {
        /// The flag, e.g. `--tls-cert`.
        flag: &'static str,
        /// What is wrong, naming the value.
        message: String,
    },
    /// A file named by a flag could not be read.
    #[error("{flag}: cannot read {path}: {source}")]
    ReadFile {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A listening address could not be bound.
    #[error("{flag}: cannot listen on {addr}: {source}")]
    Bind {
        /// The flag that gave the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The gRPC transport failed (TLS set-up or serving).
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not read the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Another I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True when a flag's value is at fault (a bad value, or a file it
    /// names that cannot be read): a usage error, exit code 2, not a
    /// failure of the server.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Config { .. } | Self::ReadFile { .. })
    }

    /// A configuration error for `flag`.
    pub fn config(flag: &'static str, message: impl Into<String>) -> Self {
        Self::Config {
            flag,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_and_unreadable_files_are_usage_errors_and_a_busy_port_is_not() {
        assert!(Error::config("--token-file", "not a token file").is_usage());
        let missing = Error::ReadFile {
            flag: "--token-file",
            path: "/nonexistent.yaml".into(),
            source: io::ErrorKind::NotFound.into(),
        };
        assert!(missing.is_usage());
        let busy = Error::Bind {
            flag: "--grpc-addr",
            addr: ([127, 0, 0, 1], 1).into(),
            source: io::ErrorKind::AddrInUse.into(),
        };
        assert!(!busy.is_usage());
    }
}
