//! The `main` every service binary shares: parse, validate, run, exit.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the server fails, 2 for a bad
//! flag or value (clap's own convention for usage errors), also one found
//! only when the server reads it, such as a token file that is not one or
//! is missing ([`Error::is_usage`]).

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};

use crate::{Error, config::ServerArgs, shutdown, telemetry};

/// A service's configuration: its own flags plus the shared [`ServerArgs`].
pub trait ServiceConfig: Parser {
    /// The shared server options.
    fn server(&self) -> &ServerArgs;

    /// Checks what clap cannot; the default checks the shared options.
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag and the value.
    fn validate(&self) -> Result<(), Error> {
        self.server().validate()
    }
}

/// Parses the configuration, then runs `serve` on a multi-threaded runtime
/// until SIGTERM or SIGINT.
pub fn main<C, F, Fut>(serve: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, shutdown::Signal) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    // clap prints the problem and exits with code 2 on a usage error.
    let config = C::parse();
    if let Err(error) = config.validate() {
        C::command().error(ErrorKind::ValueValidation, error).exit();
    }
    let server = config.server();
    if let Err(error) = telemetry::init(server.log_format, &server.log) {
        C::command().error(ErrorKind::ValueValidation, error).exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Listening for SIGTERM from here on, before anything is served.
    let shutdown = {
        let _entered = runtime.enter();
        shutdown::signal()
    };
    match runtime.block_on(serve(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_usage() => {
            C::command().error(ErrorKind::ValueValidation, error).exit()
        }
        Err(error) => {
            tracing::error!(error = %error, "server failed");
            ExitCode::FAILURE
        }
    }
}
