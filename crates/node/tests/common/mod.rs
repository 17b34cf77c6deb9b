//! What the node tests share: a client of a node, and keys stored through
//! it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use ringkv_node::Node;

/// A client of `node`, patient enough for a membership change on a loaded
/// machine.
pub async fn client(node: &Node) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(20)));
    redis::Client::open(format!("redis://{}/", node.client_addr()))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Stores each of `keys` with itself as its value, through `con`.
pub async fn set_each(con: &mut MultiplexedConnection, keys: &[String]) {
    for k in keys {
        let () = redis::cmd("SET")
            .arg(k)
            .arg(k)
            .query_async(con)
            .await
            .unwrap();
    }
}
