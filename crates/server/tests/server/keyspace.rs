//! SCAN, KEYS, RANDOMKEY, DBSIZE, FLUSHALL, RENAME, RENAMENX, COPY, MSETNX
//! through the server; SCAN while nodes join and leave.

use std::collections::HashSet;

use redis::Value;
use ringkv_server::ServerConfig;

use crate::client::{error, q};
use crate::common::start;

#[tokio::test]
async fn scan_keys_randomkey_and_flush() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    assert_eq!(
        q::<Value>(&mut c, &["RANDOMKEY"]).await.unwrap(),
        Value::Nil
    );
    for i in 0..200 {
        let _: () = q(&mut c, &["SET", &format!("user:{i}"), "x"])
            .await
            .unwrap();
    }
    let _: () = q(&mut c, &["SET", "other", "x"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 201);
    let (mut cursor, mut seen) = ("0".to_string(), HashSet::new());
    loop {
        let (next, keys): (String, Vec<String>) =
            q(&mut c, &["SCAN", &cursor, "MATCH", "user:1*", "COUNT", "7"])
                .await
                .unwrap();
        seen.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 111, "user:1, user:10..19, user:100..199");
    let (_, none): (String, Vec<String>) =
        q(&mut c, &["SCAN", "0", "TYPE", "list", "COUNT", "1000"])
            .await
            .unwrap();
    assert!(none.is_empty());
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "user:?"]).await.unwrap();
    keys.sort();
    assert_eq!(keys.len(), 10);
    assert_eq!(
        q::<Vec<String>>(&mut c, &["KEYS", "*"])
            .await
            .unwrap()
            .len(),
        201
    );
    assert!(q::<String>(&mut c, &["RANDOMKEY"]).await.is_ok());
    assert!(
        error(&mut c, &["SCAN", "x"])
            .await
            .contains("invalid cursor")
    );
    assert!(
        error(&mut c, &["SCAN", "0", "COUNT", "0"])
            .await
            .contains("syntax error")
    );
    assert!(
        error(&mut c, &["SCAN", "0", "MATCH"])
            .await
            .contains("syntax error")
    );
    assert!(
        error(&mut c, &["FLUSHALL", "NOW"])
            .await
            .contains("syntax error")
    );
    let _: () = q(&mut c, &["FLUSHALL"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 0);
    let _: () = q(&mut c, &["SET", "k", "v"]).await.unwrap();
    let _: () = q(&mut c, &["FLUSHDB", "ASYNC"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 0);
    server.stop().await;
}

#[tokio::test]
async fn rename_copy_and_msetnx_are_all_or_nothing() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let _: () = q(&mut c, &["SET", "a", "1", "EX", "100"]).await.unwrap();
    let _: () = q(&mut c, &["RENAME", "a", "b"]).await.unwrap();
    assert_eq!(q::<Value>(&mut c, &["GET", "a"]).await.unwrap(), Value::Nil);
    assert_eq!(q::<String>(&mut c, &["GET", "b"]).await.unwrap(), "1");
    assert!(
        q::<i64>(&mut c, &["TTL", "b"]).await.unwrap() > 90,
        "the TTL moves"
    );
    assert!(
        error(&mut c, &["RENAME", "nope", "x"])
            .await
            .contains("no such key")
    );
    let _: () = q(&mut c, &["SET", "c", "3"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "b", "c"]).await.unwrap(), 0);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "b", "d"]).await.unwrap(), 1);
    let _: () = q(&mut c, &["RENAME", "d", "d"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["COPY", "d", "c"]).await.unwrap(), 0);
    assert_eq!(
        q::<i64>(&mut c, &["COPY", "d", "c", "REPLACE"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(q::<String>(&mut c, &["GET", "c"]).await.unwrap(), "1");
    assert!(
        error(&mut c, &["COPY", "d", "d"])
            .await
            .contains("source and destination objects are the same")
    );
    assert!(
        error(&mut c, &["COPY", "d", "e", "DB", "x"])
            .await
            .contains("not an integer")
    );
    assert!(
        error(&mut c, &["COPY", "d", "e", "DB", "1"])
            .await
            .contains("out of range")
    );
    assert_eq!(
        q::<i64>(&mut c, &["MSETNX", "m1", "1", "m2", "2"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &["MSETNX", "m3", "3", "m1", "x"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "m3"]).await.unwrap(),
        0,
        "none written"
    );
    assert!(
        error(&mut c, &["MSETNX", "a", "1", "b"])
            .await
            .contains("wrong number of arguments for 'msetnx' command")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scan_returns_every_key_while_nodes_join_and_leave() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let keys: HashSet<String> = (0..2000).map(|i| format!("k{i}")).collect();
    for k in &keys {
        let _: () = q(&mut c, &["SET", k, "v"]).await.unwrap();
    }
    let cluster = server.cluster.clone();
    let churn = tokio::task::spawn_blocking(move || {
        for round in 0..3 {
            let id = format!("extra{round}");
            cluster.add_node(&id).expect("add");
            cluster.remove_node(&id).expect("remove");
        }
    });
    for _ in 0..5 {
        let (mut cursor, mut seen) = ("0".to_string(), HashSet::new());
        loop {
            let (next, page): (String, Vec<String>) =
                q(&mut c, &["SCAN", &cursor, "COUNT", "50"]).await.unwrap();
            seen.extend(page);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        let missed: Vec<_> = keys.difference(&seen).take(5).collect();
        assert!(missed.is_empty(), "missed {missed:?}");
    }
    churn.await.expect("churn");
    server.stop().await;
}
