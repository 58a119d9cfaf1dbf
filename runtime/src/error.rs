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
    /// A configuration error for `flag`.
    pub(crate) fn config(flag: &'static str, message: impl Into<String>) -> Self {
        Self::Config {
            flag,
            message: message.into(),
        }
    }
}
