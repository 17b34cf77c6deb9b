//! Every command through the `redis` client crate.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value, cmd};
use ringkv_server::ServerConfig;

use crate::common::start;

pub async fn q<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    args: &[&str],
) -> RedisResult<T> {
    let mut c = cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(con).await
}

/// The error text of a reply that must fail.
pub async fn error(con: &mut MultiplexedConnection, args: &[&str]) -> String {
    match q::<Value>(con, args).await {
        Ok(v) => panic!("{args:?} succeeded with {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn string_commands() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let ok: String = q(&mut c, &["SET", "a", "1"]).await.unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "a"])
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "b"]).await.unwrap(),
        None
    );
    // NX, XX, GET.
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "a", "2", "NX"])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "b", "2", "XX"])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "b", "2", "nx"])
            .await
            .unwrap()
            .as_deref(),
        Some("OK")
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "a", "3", "XX", "GET"])
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "z", "9", "GET"])
            .await
            .unwrap(),
        None
    );
    assert!(
        error(&mut c, &["SET", "a", "4", "EX", "0"])
            .await
            .contains("invalid expire time in 'set' command")
    );
    assert!(
        error(&mut c, &["SET", "a", "4", "NX", "XX"])
            .await
            .contains("syntax error")
    );
    assert_eq!(q::<String>(&mut c, &["GET", "a"]).await.unwrap(), "3");
    // MSET, MGET, EXISTS, STRLEN, DEL, DBSIZE.
    assert_eq!(
        q::<String>(&mut c, &["MSET", "m1", "x", "m2", "yy"])
            .await
            .unwrap(),
        "OK"
    );
    assert!(
        error(&mut c, &["MSET", "m1", "x", "m2"])
            .await
            .contains("wrong number of arguments")
    );
    let values: Vec<Option<String>> = q(&mut c, &["MGET", "m1", "nope", "m2"]).await.unwrap();
    assert_eq!(values, vec![Some("x".into()), None, Some("yy".into())]);
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "m1", "m1", "nope"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "m2"]).await.unwrap(), 2);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "nope"]).await.unwrap(), 0);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 5);
    assert_eq!(
        q::<i64>(&mut c, &["DEL", "m1", "m2", "nope", "m1"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 3);
    server.stop().await;
}

#[tokio::test]
async fn counters_and_their_errors() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "41"]).await.unwrap(), 42);
    assert_eq!(q::<i64>(&mut c, &["DECR", "n"]).await.unwrap(), 41);
    assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "-9"]).await.unwrap(), 50);
    assert_eq!(q::<i64>(&mut c, &["DECR", "fresh"]).await.unwrap(), -1);
    for bad in ["1.5", "abc", "", " 1", "01"] {
        let e = error(&mut c, &["INCRBY", "n", bad]).await;
        assert!(e.contains("value is not an integer or out of range"), "{e}");
    }
    q::<()>(&mut c, &["SET", "s", "hello"]).await.unwrap();
    assert!(
        error(&mut c, &["INCR", "s"])
            .await
            .contains("value is not an integer")
    );
    assert_eq!(q::<String>(&mut c, &["GET", "s"]).await.unwrap(), "hello");
    q::<()>(&mut c, &["SET", "big", &i64::MAX.to_string()])
        .await
        .unwrap();
    assert!(
        error(&mut c, &["INCR", "big"])
            .await
            .contains("increment or decrement would overflow")
    );
    assert_eq!(q::<i64>(&mut c, &["GET", "big"]).await.unwrap(), i64::MAX);
    assert!(
        error(&mut c, &["DECRBY", "n", &i64::MIN.to_string()])
            .await
            .contains("decrement would overflow")
    );
    assert_eq!(q::<i64>(&mut c, &["GET", "n"]).await.unwrap(), 50);
    server.stop().await;
}

#[tokio::test]
async fn connection_and_introspection_commands() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    assert_eq!(q::<String>(&mut c, &["PING"]).await.unwrap(), "PONG");
    assert_eq!(q::<String>(&mut c, &["PING", "hi"]).await.unwrap(), "hi");
    assert_eq!(
        q::<String>(&mut c, &["ECHO", "echo me"]).await.unwrap(),
        "echo me"
    );
    assert_eq!(q::<String>(&mut c, &["SELECT", "0"]).await.unwrap(), "OK");
    assert!(
        error(&mut c, &["SELECT", "1"])
            .await
            .contains("DB index is out of range")
    );
    // CLIENT.
    assert_eq!(
        q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        q::<String>(&mut c, &["CLIENT", "SETNAME", "tester"])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        q::<String>(&mut c, &["CLIENT", "GETNAME"]).await.unwrap(),
        "tester"
    );
    assert!(
        error(&mut c, &["CLIENT", "SETNAME", "a b"])
            .await
            .contains("cannot contain spaces")
    );
    let id: i64 = q(&mut c, &["CLIENT", "ID"]).await.unwrap();
    let info: String = q(&mut c, &["CLIENT", "INFO"]).await.unwrap();
    assert!(
        info.starts_with(&format!("id={id} addr=127.0.0.1:")),
        "{info}"
    );
    assert!(info.contains(" name=tester "), "{info}");
    assert!(
        error(&mut c, &["CLIENT", "FOO"])
            .await
            .contains("unknown subcommand")
    );
    assert!(
        error(&mut c, &["CLIENT", "KILL"])
            .await
            .contains("wrong number of arguments for 'client|kill' command")
    );
    // HELLO.
    let hello: HashMap<String, Value> = q(&mut c, &["HELLO", "2"]).await.unwrap();
    assert_eq!(hello.get("proto"), Some(&Value::Int(2)));
    assert_eq!(hello.get("id"), Some(&Value::Int(id)));
    assert!(error(&mut c, &["HELLO", "4"]).await.contains("NOPROTO"));
    let _: Value = q(&mut c, &["HELLO", "2", "SETNAME", "renamed"])
        .await
        .unwrap();
    assert_eq!(
        q::<String>(&mut c, &["CLIENT", "GETNAME"]).await.unwrap(),
        "renamed"
    );
    // COMMAND.
    let count: i64 = q(&mut c, &["COMMAND", "COUNT"]).await.unwrap();
    let all: Vec<Value> = q(&mut c, &["COMMAND"]).await.unwrap();
    assert_eq!(all.len() as i64, count);
    let info: Vec<Vec<Value>> = q(&mut c, &["COMMAND", "INFO", "get"]).await.unwrap();
    assert_eq!(info[0][0], Value::BulkString(b"get".to_vec()));
    assert_eq!(info[0][1], Value::Int(2));
    let docs: Vec<Value> = q(&mut c, &["COMMAND", "DOCS", "incr", "nosuch"])
        .await
        .unwrap();
    assert_eq!(docs.len(), 2);
    // CONFIG GET.
    let config: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "max*"]).await.unwrap();
    let max_clients = crate::common::expected_max_clients(10_000).to_string();
    assert_eq!(config.get("maxclients"), Some(&max_clients));
    let config: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "TIME?UT", "client-[n-p]*"])
        .await
        .unwrap();
    assert_eq!(config.get("timeout").map(String::as_str), Some("0"));
    assert_eq!(
        config.get("client-output-buffer-limit").map(String::as_str),
        Some("normal 1073741824 0 0")
    );
    assert!(
        error(&mut c, &["CONFIG", "SET", "proto-max-bulk-len", "1"])
            .await
            .contains("can't set immutable config")
    );
    // INFO.
    q::<()>(&mut c, &["SET", "k", "v"]).await.unwrap();
    let info: String = q(&mut c, &["INFO"]).await.unwrap();
    for line in [
        "# Server",
        "# Clients",
        "# Stats",
        "# Keyspace",
        "# Ring",
        "ring_nodes:3",
        "ring_epoch:3",
        "db0:keys=1,",
        "last_rebalance:none",
        "connected_clients:1",
    ] {
        assert!(info.contains(line), "{line} missing from {info}");
    }
    let ring: String = q(&mut c, &["INFO", "ring"]).await.unwrap();
    assert!(
        ring.starts_with("# Ring\r\n") && !ring.contains("# Server"),
        "{ring}"
    );
    assert!(ring.contains("node0:id=node1,weight=1,keys="), "{ring}");
    server.stop().await;
}

#[tokio::test]
async fn errors_leave_the_connection_usable() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    assert!(
        error(&mut c, &["NOSUCH", "x"])
            .await
            .contains("unknown command 'NOSUCH'")
    );
    assert!(
        error(&mut c, &["GET", "a", "b"])
            .await
            .contains("wrong number of arguments for 'get'")
    );
    assert!(
        error(&mut c, &["INCRBY", "a"])
            .await
            .contains("wrong number of arguments for 'incrby'")
    );
    assert_eq!(q::<String>(&mut c, &["PING"]).await.unwrap(), "PONG");
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 0);
    server.stop().await;
}

#[tokio::test]
async fn quit_closes_the_connection() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    assert_eq!(q::<String>(&mut c, &["QUIT"]).await.unwrap(), "OK");
    assert!(q::<String>(&mut c, &["PING"]).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn auth_is_required_with_a_password() {
    let config = ServerConfig {
        requirepass: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let server = start(config).await;
    let mut c = server.client().await;
    assert!(error(&mut c, &["GET", "a"]).await.contains("NOAUTH"));
    assert!(error(&mut c, &["SET", "a", "1"]).await.contains("NOAUTH"));
    assert!(error(&mut c, &["HELLO", "2"]).await.contains("NOAUTH"));
    assert!(
        error(&mut c, &["AUTH", "wrong"])
            .await
            .contains("WRONGPASS")
    );
    assert!(
        error(&mut c, &["AUTH", "admin", "s3cret"])
            .await
            .contains("WRONGPASS")
    );
    assert!(error(&mut c, &["GET", "a"]).await.contains("NOAUTH"));
    assert_eq!(
        q::<String>(&mut c, &["AUTH", "s3cret"]).await.unwrap(),
        "OK"
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "a"]).await.unwrap(),
        None
    );
    assert_eq!(
        server.cluster.stats().total_keys,
        0,
        "refused SET wrote nothing"
    );

    // HELLO can authenticate.
    let mut h = server.client().await;
    let _: Value = q(&mut h, &["HELLO", "2", "AUTH", "default", "s3cret"])
        .await
        .unwrap();
    assert_eq!(q::<String>(&mut h, &["PING"]).await.unwrap(), "PONG");

    // The password in the URL: the client library authenticates itself.
    let url = format!("redis://:s3cret@{}/", server.addr);
    let mut u = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(q::<String>(&mut u, &["SET", "a", "1"]).await.unwrap(), "OK");
    let bad = format!("redis://:nope@{}/", server.addr);
    assert!(
        redis::Client::open(bad)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn auth_without_a_password_is_an_error() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    assert!(
        error(&mut c, &["AUTH", "x"])
            .await
            .contains("without any password configured")
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_commands() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    for i in 0..500 {
        q::<()>(&mut c, &["SET", &format!("key{i}"), "v"])
            .await
            .unwrap();
    }
    let report: HashMap<String, Value> =
        q(&mut c, &["RINGKV.ADDNODE", "node4", "2"]).await.unwrap();
    assert_eq!(report["op"], Value::BulkString(b"add_node".to_vec()));
    assert_eq!(report["epoch"], Value::Int(4));
    let Value::Int(moved) = report["keys_moved"] else {
        panic!("{report:?}")
    };
    assert!(moved > 0, "node4 took keys");
    let nodes: Vec<HashMap<String, Value>> = q(&mut c, &["RINGKV.NODES"]).await.unwrap();
    assert_eq!(nodes.len(), 4);
    assert_eq!(nodes[3]["id"], Value::BulkString(b"node4".to_vec()));
    assert_eq!(nodes[3]["weight"], Value::Int(2));
    assert_eq!(nodes[3]["keys"], Value::Int(moved));
    assert!(
        error(&mut c, &["RINGKV.ADDNODE", "node4"])
            .await
            .contains("node4")
    );
    for bad in ["0", "-1", "x", "99999999999"] {
        assert!(
            error(&mut c, &["RINGKV.ADDNODE", "node9", bad])
                .await
                .contains("weight")
        );
    }
    assert!(
        error(&mut c, &["RINGKV.REMOVENODE", "nosuch"])
            .await
            .contains("nosuch")
    );
    // LOCATE: the owner holds the key.
    let located: HashMap<String, Value> = q(&mut c, &["RINGKV.LOCATE", "key7"]).await.unwrap();
    let owner = located["owner"].clone();
    assert_eq!(located["stored_on"], Value::Array(vec![owner]));
    let info: String = q(&mut c, &["INFO", "ring"]).await.unwrap();
    assert!(
        info.contains("last_rebalance:add_node\r\nlast_rebalance_node:node4\r\n"),
        "{info}"
    );
    let report: HashMap<String, Value> = q(&mut c, &["RINGKV.REMOVENODE", "node2"]).await.unwrap();
    assert_eq!(report["op"], Value::BulkString(b"remove_node".to_vec()));
    assert_eq!(
        q::<Option<String>>(&mut c, &["RINGKV.RESUME"])
            .await
            .unwrap(),
        None
    );
    assert_eq!(q::<i64>(&mut c, &["RINGKV.REPAIR"]).await.unwrap(), 0);
    let nodes: Vec<Value> = q(&mut c, &["RINGKV.NODES"]).await.unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 500);
    for i in 0..500 {
        assert_eq!(
            q::<String>(&mut c, &["GET", &format!("key{i}")])
                .await
                .unwrap(),
            "v"
        );
    }
    server.stop().await;
}
