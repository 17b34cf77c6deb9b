//! The connected clients, as `CLIENT LIST` and `CLIENT KILL` see them.
//!
//! Each connection publishes a [`ClientHandle`]: what another connection
//! may read about it (name, last command, idle time, protocol) and the
//! switch that closes it. The connection's own task stays the only writer
//! of everything but the kill switch, and the hot path touches only
//! relaxed atomics (no lock per command).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::frame::Protocol;

/// What other connections may see of one connection, and its kill switch.
#[derive(Debug)]
pub struct ClientHandle {
    /// `CLIENT ID`.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection's file descriptor, as `CLIENT LIST` shows it.
    pub fd: i64,
    /// When the connection was accepted.
    pub since: Instant,
    /// `CLIENT SETNAME`. A std mutex: held only to copy or replace it.
    name: Mutex<Option<Bytes>>,
    /// Index in the command table of the last command, plus one (0: none).
    last_command: AtomicUsize,
    /// Milliseconds after `since` of the last request.
    last_active_ms: AtomicU64,
    /// 2 or 3.
    protocol: AtomicU8,
    /// `CLIENT NO-EVICT`.
    no_evict: AtomicBool,
    killed: AtomicBool,
    kill: Notify,
}

impl ClientHandle {
    /// A handle for a connection accepted now.
    pub fn new(id: u64, peer: SocketAddr, fd: i64) -> ClientHandle {
        ClientHandle {
            id,
            peer,
            fd,
            since: Instant::now(),
            name: Mutex::new(None),
            last_command: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            protocol: AtomicU8::new(2),
            no_evict: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        }
    }

    /// The name, if one was set.
    pub fn name(&self) -> Option<Bytes> {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets or clears the name.
    pub fn set_name(&self, name: Option<Bytes>) {
        *self.name.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }

    /// Records a request for the command at `index` of the table.
    pub fn touch(&self, index: usize) {
        self.last_command.store(index + 1, Ordering::Relaxed);
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// The table index of the last command, if any.
    pub fn last_command(&self) -> Option<usize> {
        self.last_command.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Seconds since the last request.
    pub fn idle_secs(&self) -> u64 {
        let age_ms = self.since.elapsed().as_millis() as u64;
        age_ms.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)) / 1000
    }

    /// Publishes the protocol `HELLO` chose.
    pub fn set_protocol(&self, protocol: Protocol) {
        self.protocol
            .store(protocol.version() as u8, Ordering::Relaxed);
    }

    /// 2 or 3.
    pub fn protocol(&self) -> u8 {
        self.protocol.load(Ordering::Relaxed)
    }

    /// `CLIENT NO-EVICT on|off`.
    pub fn set_no_evict(&self, on: bool) {
        self.no_evict.store(on, Ordering::Relaxed);
    }

    /// Whether `CLIENT NO-EVICT on` is in force.
    pub fn no_evict(&self) -> bool {
        self.no_evict.load(Ordering::Relaxed)
    }

    /// Asks the connection to close (`CLIENT KILL`): it closes after the
    /// command it is running, or at once if it is waiting for a request.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.kill.notify_one();
    }

    /// Whether [`ClientHandle::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Resolves once the connection is killed (also if that happened
    /// before the call).
    pub async fn killed(&self) {
        if !self.is_killed() {
            self.kill.notified().await;
        }
    }
}

/// Every connection open now, by id. A std mutex: taken to add or remove
/// one connection, or to copy the list, never across an `.await`.
#[derive(Debug, Default)]
pub struct Clients {
    open: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
}

impl Clients {
    /// Adds a connection.
    pub fn add(&self, handle: Arc<ClientHandle>) {
        self.lock().insert(handle.id, handle);
    }

    /// Removes a connection that closed.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The open connections, by id.
    pub fn list(&self) -> Vec<Arc<ClientHandle>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientHandle>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kill_before_the_wait_is_not_lost() {
        let handle = ClientHandle::new(1, "127.0.0.1:1".parse().expect("addr"), 3);
        handle.kill();
        tokio::time::timeout(std::time::Duration::from_secs(5), handle.killed())
            .await
            .expect("resolves at once");
        assert!(handle.is_killed());
    }

    #[test]
    fn the_registry_lists_by_id() {
        let clients = Clients::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        for id in [3, 1, 2] {
            clients.add(Arc::new(ClientHandle::new(id, addr, -1)));
        }
        clients.remove(2);
        let ids: Vec<u64> = clients.list().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 3]);
    }
}
