//! Why the server could not run.

/// Why [`run`](crate::run) failed. In every case no connection was served
/// and the cluster is untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An invalid [`ServerConfig`](crate::ServerConfig) value; fix it and
    /// start again.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The listener's address could not be read.
    #[error("the listener is unusable: {0}")]
    Listener(#[from] std::io::Error),
    /// A thread the server needs could not be started.
    #[error("cannot start the server's {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}
