//! Tracing set-up: an env filter and pretty or JSON lines on stderr.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{Error, config::LogFormat};

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), so tests that start several servers in one process work.
///
/// # Errors
/// [`Error::Config`] naming `--log` when the filter does not parse.
pub fn init(format: LogFormat, filter: &str) -> Result<(), Error> {
    let filter = EnvFilter::try_new(filter).map_err(|e| Error::Config {
        flag: "--log",
        message: format!("`{filter}`: {e}"),
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    // try_init fails only when a subscriber is already set, which is fine.
    let _ = match format {
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    Ok(())
}
