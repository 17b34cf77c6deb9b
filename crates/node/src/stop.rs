//! How a node's process learns that a client asked it to stop.

use std::time::Duration;

use crate::Node;

impl Node {
    /// Resolves once the node's client server has stopped by itself: a
    /// client sent `SHUTDOWN` (or the server failed). The process then
    /// stops the node as on SIGTERM ([`Node::shutdown`]); the node stays a
    /// member, marked down by the others until it returns. Checked every
    /// 100 ms: the server's task is awaited only by the shutdown.
    pub async fn client_server_stopped(&self) {
        while !self.server.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
