//! Server settings.

use std::time::Duration;

use crate::ServerError;

/// Most connections `max_clients` may ask for: Redis's bound (`maxclients`
/// is an unsigned 32-bit setting), and far below what tokio's semaphore can
/// count.
pub const MAX_CLIENTS_LIMIT: usize = u32::MAX as usize;

/// Bytes a reply frame adds around a bulk string's payload, at most (`$`,
/// up to 20 digits, two CRLFs).
const BULK_OVERHEAD: usize = 25;

/// Settings of [`run`](crate::run): plain data with [`Default`] and
/// [`ServerConfig::validate`].
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// With a password, every command but `AUTH`, `HELLO` and `QUIT` is
    /// refused with `NOAUTH` until the connection authenticates (as the
    /// `default` user), and an unauthenticated connection may send at most
    /// 10 arguments of at most 16 KiB each per request (as Redis). Default:
    /// none.
    pub requirepass: Option<String>,
    /// Connections served at once; one more is told
    /// `-ERR max number of clients reached` and closed. Default 10000,
    /// Redis's `maxclients`. At startup it is lowered to the process's
    /// open-file limit minus 32 if that is smaller (with a warning), as
    /// Redis does; at most [`MAX_CLIENTS_LIMIT`].
    pub max_clients: usize,
    /// Longest bulk string (key, value or argument) a request may declare,
    /// in bytes; a longer one is refused with a protocol error before its
    /// bytes are buffered, and the connection is closed. Default 512 MiB,
    /// Redis's `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// Most bytes of replies a connection may have pending: a reply that
    /// would take it past this closes the connection without the reply
    /// (Redis's `client-output-buffer-limit` hard limit for normal
    /// clients), and commands over many keys (`MGET`) stop building their
    /// reply as soon as it would. 0 means no limit (Redis's default for
    /// normal clients). Default 1 GiB: unlike Redis, one reply is built
    /// whole before it is sent, so without a limit one `MGET` naming a
    /// large value many times builds a reply of any size; 1 GiB still
    /// lets any value up to the default `max_bulk_len` be read back. Must
    /// be 0 or more than `max_bulk_len` (by a reply's framing bytes), so
    /// that every value that can be written can be read.
    pub client_output_buffer_limit: usize,
    /// Closes a connection that has sent nothing, and not taken any of its
    /// replies, for this long (Redis's `timeout`). Zero means never
    /// (Redis's default).
    pub idle_timeout: Duration,
    /// How long shutdown waits for connections to finish the requests
    /// they sent and take their replies; then those left are dropped. A
    /// second shutdown signal drops them at once. Default 10 s.
    pub shutdown_timeout: Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("ServerConfig")
            .field("requirepass", &self.requirepass.as_ref().map(|_| "<set>"))
            .field("max_clients", &self.max_clients)
            .field("max_bulk_len", &self.max_bulk_len)
            .field(
                "client_output_buffer_limit",
                &self.client_output_buffer_limit,
            )
            .field("idle_timeout", &self.idle_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            requirepass: None,
            max_clients: 10_000,
            max_bulk_len: 512 * 1024 * 1024,
            client_output_buffer_limit: 1024 * 1024 * 1024,
            idle_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_clients == 0 {
            return Err(ServerError::Config("max_clients must be at least 1".into()));
        }
        if self.max_clients > MAX_CLIENTS_LIMIT {
            return Err(ServerError::Config(format!(
                "max_clients {} is too large: at most {MAX_CLIENTS_LIMIT}",
                self.max_clients
            )));
        }
        if self.max_bulk_len == 0 {
            return Err(ServerError::Config(
                "max_bulk_len must be at least 1 byte".into(),
            ));
        }
        if self.client_output_buffer_limit != 0
            && self.client_output_buffer_limit < self.max_bulk_len.saturating_add(BULK_OVERHEAD)
        {
            return Err(ServerError::Config(format!(
                "client_output_buffer_limit {} is too small to send back a value of max_bulk_len \
                 ({} bytes): make it at least {} bytes, 0 for no limit, or lower max_bulk_len",
                self.client_output_buffer_limit,
                self.max_bulk_len,
                self.max_bulk_len.saturating_add(BULK_OVERHEAD)
            )));
        }
        if self.requirepass.as_deref() == Some("") {
            return Err(ServerError::Config(
                "requirepass must not be empty; leave it unset to serve without a password".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_max_clients_is_a_configuration_error() {
        let config = ServerConfig {
            max_clients: usize::MAX,
            ..ServerConfig::default()
        };
        assert!(
            matches!(config.validate(), Err(ServerError::Config(m)) if m.contains("too large"))
        );
        let config = ServerConfig {
            max_clients: MAX_CLIENTS_LIMIT,
            ..ServerConfig::default()
        };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_output_limit_must_fit_one_value() {
        let small = ServerConfig {
            client_output_buffer_limit: 1024,
            ..ServerConfig::default()
        };
        assert!(small.validate().is_err());
        let fits = ServerConfig {
            max_bulk_len: 1000,
            client_output_buffer_limit: 1025,
            ..ServerConfig::default()
        };
        assert!(fits.validate().is_ok());
        let none = ServerConfig {
            client_output_buffer_limit: 0,
            ..ServerConfig::default()
        };
        assert!(none.validate().is_ok());
        assert!(ServerConfig::default().validate().is_ok());
    }
}
