//! Server settings.

use crate::ServerError;

/// Settings of [`run`](crate::run): plain data with [`Default`] and
/// [`ServerConfig::validate`].
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// With a password, every command but `AUTH`, `HELLO` and `QUIT` is
    /// refused with `NOAUTH` until the connection authenticates (as the
    /// `default` user). Default: none.
    pub requirepass: Option<String>,
    /// Connections served at once; one more is told
    /// `-ERR max number of clients reached` and closed. Default 10000,
    /// Redis's `maxclients`.
    pub max_clients: usize,
    /// Longest bulk string (key, value or argument) a request may declare,
    /// in bytes; a longer one is refused with a protocol error before its
    /// bytes are buffered, and the connection is closed. Default 512 MiB,
    /// Redis's `proto-max-bulk-len`.
    pub max_bulk_len: usize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("ServerConfig")
            .field("requirepass", &self.requirepass.as_ref().map(|_| "<set>"))
            .field("max_clients", &self.max_clients)
            .field("max_bulk_len", &self.max_bulk_len)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            requirepass: None,
            max_clients: 10_000,
            max_bulk_len: 512 * 1024 * 1024,
        }
    }
}

impl ServerConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_clients == 0 {
            return Err(ServerError::Config("max_clients must be at least 1".into()));
        }
        if self.max_bulk_len == 0 {
            return Err(ServerError::Config(
                "max_bulk_len must be at least 1 byte".into(),
            ));
        }
        if self.requirepass.as_deref() == Some("") {
            return Err(ServerError::Config(
                "requirepass must not be empty; leave it unset to serve without a password".into(),
            ));
        }
        Ok(())
    }
}
