//! SIGTERM and SIGINT as a future.

use std::pin::Pin;

/// The shutdown future handed to a service's `serve`.
pub type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Completes on the first SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is
/// first polled: a SIGTERM that arrives while the service is still starting
/// (a pod deleted at once) shuts it down cleanly instead of killing it.
/// Call it inside the runtime.
///
/// If a handler cannot be installed the future never completes for that
/// signal; the other still works, and the failure is logged.
pub fn signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())
            .inspect_err(|error| tracing::error!(%error, "cannot listen for SIGTERM"))
            .ok();
        let mut interrupt = signal(SignalKind::interrupt())
            .inspect_err(|error| tracing::error!(%error, "cannot listen for SIGINT"))
            .ok();
        Box::pin(async move {
            let term = async {
                match &mut terminate {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match &mut interrupt {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => tracing::info!("SIGTERM received, shutting down"),
                _ = int => tracing::info!("SIGINT received, shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    Box::pin(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("SIGINT received, shutting down"),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        }
    })
}
