//! The shutdown signals of `ringkv serve` and `ringkv node`.

use std::future::Future;

use tracing::{info, warn};

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM from the first poll.
/// If the handlers cannot be installed, it never resolves (the server then
/// runs until killed).
pub async fn signal() {
    signals().0.await
}

/// The first and the second shutdown signal (SIGINT or SIGTERM) from now
/// on, as two futures. Both kinds are listened for from this call, so a
/// second signal sent right after the first is counted even if the second
/// future is not polled yet (one listened for only once shutdown had
/// started could miss it: seen as a flaky test on a loaded machine).
/// Call within the runtime.
pub fn signals() -> (
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
) {
    let (count, counted) = tokio::sync::watch::channel(0u32);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(e) => {
                warn!(error = %e, signal = name, "cannot listen for this signal; it will not stop the server");
                None
            }
        };
        let (mut term, mut int) = (
            listen(SignalKind::terminate(), "SIGTERM"),
            listen(SignalKind::interrupt(), "SIGINT"),
        );
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = async { term.as_mut()?.recv().await } => "SIGTERM",
                    Some(()) = async { int.as_mut()?.recv().await } => "SIGINT",
                    else => return std::future::pending::<()>().await,
                };
                info!(signal = name, "shutdown requested");
                count.send_modify(|n| *n += 1);
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            info!(signal = "SIGINT", "shutdown requested");
            count.send_modify(|n| *n += 1);
        }
        warn!("cannot listen for SIGINT; it will not stop the server");
        std::future::pending::<()>().await
    });
    let nth = move |n: u32| {
        let mut counted = counted.clone();
        async move {
            if counted.wait_for(|c| *c >= n).await.is_err() {
                std::future::pending::<()>().await; // no listener: never
            }
        }
    };
    (nth(1), nth(2))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal, raise};
    use std::time::Duration;

    /// The second signal arrives before anyone waits for it (the server
    /// is still starting its shutdown): it is counted. A listener made
    /// only when the second wait begins never sees it.
    #[tokio::test]
    async fn a_second_signal_before_the_second_wait_is_counted() {
        let (first, second) = signals();
        raise(Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(5), first)
            .await
            .expect("the first signal was seen");
        raise(Signal::SIGTERM).unwrap();
        // Handled (by the listener) before the second wait is polled.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second signal was lost");
    }
}
