//! Cluster administration through the server: forced removal, and a
//! membership change that panics.

use std::collections::HashMap;

use redis::Value;
use ringkv_server::ServerConfig;

use crate::client::{error, q};

#[tokio::test]
async fn removenode_force_drops_what_cannot_move_and_says_how_much() {
    let cluster = std::sync::Arc::new(
        ringkv_cluster::Cluster::new(ringkv_cluster::ClusterConfig::default()).unwrap(),
    );
    cluster.add_node("only").unwrap();
    for i in 0..25 {
        cluster.put(format!("k{i}"), "v").unwrap();
    }
    let server = crate::common::start_with(cluster, ServerConfig::default()).await;
    let mut c = server.client().await;
    assert!(
        error(&mut c, &["RINGKV.REMOVENODE", "only"])
            .await
            .contains("last node")
    );
    assert!(
        error(&mut c, &["RINGKV.REMOVENODE", "only", "NOW"])
            .await
            .contains("syntax error")
    );
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 25);
    let report: HashMap<String, Value> = q(&mut c, &["RINGKV.REMOVENODE", "only", "force"])
        .await
        .unwrap();
    assert_eq!(report["op"], Value::BulkString(b"remove_node".to_vec()));
    assert_eq!(report["keys_dropped"], Value::Int(25));
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 0);
    server.stop().await;
}

/// A store that panics while a membership change copies from it, once
/// armed.
struct PanickyStore {
    inner: ringkv_cluster::MemStore,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ringkv_cluster::Store for PanickyStore {
    fn get(
        &self,
        token: ringkv_cluster::Token,
        key: &[u8],
    ) -> Result<Option<ringkv_cluster::Entry>, ringkv_cluster::StoreError> {
        self.inner.get(token, key)
    }

    fn put(
        &mut self,
        token: ringkv_cluster::Token,
        key: bytes::Bytes,
        entry: ringkv_cluster::Entry,
    ) -> Result<Option<ringkv_cluster::Entry>, ringkv_cluster::StoreError> {
        self.inner.put(token, key, entry)
    }

    fn delete(
        &mut self,
        token: ringkv_cluster::Token,
        key: &[u8],
    ) -> Result<Option<ringkv_cluster::Entry>, ringkv_cluster::StoreError> {
        self.inner.delete(token, key)
    }

    fn scan(
        &self,
        tokens: std::ops::RangeInclusive<ringkv_cluster::Token>,
        after: Option<ringkv_cluster::Token>,
        limit: usize,
        out: &mut Vec<ringkv_cluster::StoredEntry>,
    ) -> Result<(), ringkv_cluster::StoreError> {
        if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("scan exploded");
        }
        self.inner.scan(tokens, after, limit, out)
    }

    fn take_range(
        &mut self,
        tokens: std::ops::RangeInclusive<ringkv_cluster::Token>,
        limit: usize,
        out: &mut Vec<ringkv_cluster::StoredEntry>,
    ) -> Result<usize, ringkv_cluster::StoreError> {
        self.inner.take_range(tokens, limit, out)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

#[tokio::test]
async fn a_membership_change_that_panics_is_reported_to_the_client() {
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let factory_armed = armed.clone();
    let config = ringkv_cluster::ClusterConfig {
        placement: ringkv_cluster::Placement::BalancedPartitions { partitions: 256 },
        ..ringkv_cluster::ClusterConfig::default()
    };
    let cluster = ringkv_cluster::Cluster::with_store(
        config,
        std::sync::Arc::new(move |_: &ringkv_cluster::NodeId, _stripe| {
            Ok(Box::new(PanickyStore {
                inner: ringkv_cluster::MemStore::new(),
                armed: factory_armed.clone(),
            }) as Box<dyn ringkv_cluster::Store>)
        }),
    )
    .unwrap();
    for id in ["node1", "node2"] {
        cluster.add_node(id).unwrap();
    }
    for i in 0..100 {
        cluster.put(format!("k{i}"), "v").unwrap();
    }
    let server =
        crate::common::start_with(std::sync::Arc::new(cluster), ServerConfig::default()).await;
    let mut c = server.client().await;
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = error(&mut c, &["RINGKV.ADDNODE", "node3"]).await;
    assert!(
        e.contains("internal error: membership change panicked: scan exploded"),
        "{e}"
    );
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    // The connection and the server go on.
    assert_eq!(q::<String>(&mut c, &["PING"]).await.unwrap(), "PONG");
    let mut other = server.client().await;
    assert_eq!(q::<String>(&mut other, &["PING"]).await.unwrap(), "PONG");
    server.stop().await;
}

#[tokio::test]
async fn node_ids_with_control_characters_are_refused_and_change_nothing() {
    let server = crate::common::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let before: String = q(&mut c, &["INFO"]).await.unwrap();
    let members = |info: &str| -> Vec<String> {
        info.lines()
            .filter(|l| l.starts_with("node") || l.starts_with("ring_nodes:"))
            .map(str::to_owned)
            .collect()
    };
    for bad in ["n4\r\nrole:master", "n\u{0}4", "n 4", ""] {
        let e = error(&mut c, &["RINGKV.ADDNODE", bad]).await;
        assert!(e.contains("node id"), "{bad:?}: {e}");
        assert!(!e.contains('\r') && !e.contains('\n'), "{bad:?}: {e:?}");
    }
    let after: String = q(&mut c, &["INFO"]).await.unwrap();
    let forged = |info: &str| info.lines().filter(|l| *l == "role:master").count();
    assert_eq!(forged(&before), forged(&after), "a forged INFO line");
    assert_eq!(members(&before), members(&after));
    server.stop().await;
}
