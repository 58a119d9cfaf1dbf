//! SIGTERM and SIGINT as a future.

use std::pin::Pin;

/// The shutdown future handed to a service's `serve`.
pub type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Completes on the first SIGTERM or SIGINT (Ctrl-C).
///
/// If a signal handler cannot be installed the future never completes for
/// that signal; the other still works, and the failure is logged.
pub async fn signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => tracing::info!("SIGINT received, shutting down"),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        },
    }
}
