//! The shutdown signal of `ringkv serve`.

use tracing::{info, warn};

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. If the handlers cannot be
/// installed, it never resolves (the server then runs until killed).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                return ctrl_c().await;
            }
        };
        tokio::select! {
            _ = ctrl_c() => {}
            _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested"),
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await;
}

async fn ctrl_c() {
    match tokio::signal::ctrl_c().await {
        Ok(()) => info!(signal = "SIGINT", "shutdown requested"),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    }
}
