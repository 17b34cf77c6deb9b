//! `max_clients` against the process's open-file limit, as Redis's
//! `adjustOpenFilesLimit`: each client holds a file descriptor, so a cap
//! above the limit would let clients in that the server then cannot
//! accept (they hang, and the log fills with `accept failed`).

use tracing::warn;

use crate::ServerError;

/// Descriptors kept for the listener, logs and the rest of the process,
/// as Redis's `CONFIG_MIN_RESERVED_FDS`.
pub const RESERVED_FDS: u64 = 32;

/// The number of clients to serve: `requested`, or fewer if the open-file
/// limit (`RLIMIT_NOFILE`) cannot hold them plus [`RESERVED_FDS`]. The
/// soft limit is first raised toward the hard limit as far as needed. If
/// the limit cannot be read, `requested` stands.
pub fn cap_max_clients(requested: usize) -> Result<usize, ServerError> {
    let needed = (requested as u64).saturating_add(RESERVED_FDS);
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit; max_clients is not checked against it");
            return Ok(requested);
        }
    };
    let mut limit = soft;
    if soft < needed {
        let target = needed.min(hard);
        match rlimit::setrlimit(rlimit::Resource::NOFILE, target, hard) {
            Ok(()) => limit = target,
            Err(e) => warn!(error = %e, soft, wanted = target, "cannot raise the open-file limit"),
        }
    }
    let capped = fit(requested, limit)?;
    if capped < requested {
        warn!(
            requested,
            max_clients = capped,
            open_file_limit = limit,
            reserved = RESERVED_FDS,
            "max_clients lowered to the open-file limit minus the reserved descriptors; \
             raise the limit (ulimit -n) to serve more clients"
        );
    }
    Ok(capped)
}

/// `requested` capped by an open-file `limit`.
fn fit(requested: usize, limit: u64) -> Result<usize, ServerError> {
    if limit <= RESERVED_FDS {
        return Err(ServerError::Config(format!(
            "the open-file limit of {limit} is too low to serve any client: raise it \
             (ulimit -n) to at least {}",
            RESERVED_FDS + 1
        )));
    }
    let room = usize::try_from(limit - RESERVED_FDS).unwrap_or(usize::MAX);
    Ok(requested.min(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_32_descriptors() {
        assert_eq!(fit(10_000, 1024).unwrap(), 992);
        assert_eq!(fit(100, 1024).unwrap(), 100);
        assert_eq!(fit(5, u64::MAX).unwrap(), 5);
        assert!(matches!(fit(10, 32), Err(ServerError::Config(_))));
    }

    #[test]
    fn more_clients_than_descriptors_are_lowered() {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("readable");
        let requested = usize::try_from(hard)
            .unwrap_or(usize::MAX)
            .min(u32::MAX as usize);
        let capped = cap_max_clients(requested).expect("a usable limit");
        assert!(capped < requested, "{capped} of {requested}");
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("readable");
        assert_eq!(capped as u64, soft - RESERVED_FDS);
    }
}
