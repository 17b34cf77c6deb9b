//! CLIENT LIST/KILL, CONFIG GET/SET/RESETSTAT, INFO sections and TIME, as
//! Redis 7 answers them.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use ringkv_server::ServerConfig;
use tokio::io::AsyncWriteExt;

use crate::client::{error, q};
use crate::common::{PATIENCE, expect_closed, start, start_with};
use std::sync::Arc;

/// The `field:value` lines of an INFO reply.
fn fields(info: &str) -> HashMap<String, String> {
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn client_list_shows_every_connection_in_redis_format() {
    let server = start(ServerConfig::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let _: () = q(&mut b, &["CLIENT", "SETNAME", "bee"]).await.unwrap();
    let _: Value = q(&mut b, &["GET", "x"]).await.unwrap();
    let b_id: i64 = q(&mut b, &["CLIENT", "ID"]).await.unwrap();
    let list: String = q(&mut a, &["CLIENT", "LIST"]).await.unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let mine = lines
        .iter()
        .find(|l| l.contains("cmd=client|list"))
        .expect("mine");
    // Redis 7's fields, in its order; `qbuf` is the request being served.
    let keys: Vec<&str> = mine
        .split(' ')
        .map(|kv| kv.split('=').next().unwrap_or_default())
        .collect();
    assert_eq!(
        keys.join(" "),
        "id addr laddr fd name age idle flags db sub psub ssub multi qbuf qbuf-free argv-mem \
         multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp"
    );
    assert!(mine.contains(" qbuf=26 "), "{mine}");
    let theirs = lines
        .iter()
        .find(|l| l.contains(" name=bee "))
        .expect("b's line");
    assert!(theirs.starts_with(&format!("id={b_id} ")), "{theirs}");
    assert!(theirs.contains(" cmd=client "), "{theirs}");
    let only_b: String = q(&mut a, &["CLIENT", "LIST", "ID", &b_id.to_string()])
        .await
        .unwrap();
    assert_eq!(only_b.lines().count(), 1);
    assert!(only_b.contains(" name=bee "));
    let none: String = q(&mut a, &["CLIENT", "LIST", "TYPE", "pubsub"])
        .await
        .unwrap();
    assert_eq!(none, "");
    assert!(
        error(&mut a, &["CLIENT", "LIST", "TYPE", "x"])
            .await
            .contains("Unknown client type 'x'")
    );
    assert!(
        error(&mut a, &["CLIENT", "LIST", "ID", "z"])
            .await
            .contains("Invalid client ID")
    );
    assert_eq!(
        q::<String>(&mut a, &["CLIENT", "NO-EVICT", "on"])
            .await
            .unwrap(),
        "OK"
    );
    assert!(
        error(&mut a, &["CLIENT", "NO-EVICT", "maybe"])
            .await
            .contains("syntax error")
    );
    server.stop().await;
}

#[tokio::test]
async fn client_kill_closes_the_others_and_counts_them() {
    let server = start(ServerConfig::default()).await;
    let mut me = server.client().await;
    let mut victims = vec![server.raw().await, server.raw().await];
    // Both victims are registered once they have been served once.
    for v in &mut victims {
        crate::common::exchange(v, b"PING\r\n", b"+PONG\r\n").await;
    }
    for (args, text) in [
        (
            &["CLIENT", "KILL", "ID", "10", "wrong_arg"][..],
            "syntax error",
        ),
        (
            &["CLIENT", "KILL", "ID", "0"],
            "client-id should be greater than 0",
        ),
        (
            &["CLIENT", "KILL", "ID", "str"],
            "client-id should be greater than 0",
        ),
        (
            &["CLIENT", "KILL", "TYPE", "wrong_type"],
            "Unknown client type 'wrong_type'",
        ),
        (
            &["CLIENT", "KILL", "USER", "wrong_user"],
            "No such user 'wrong_user'",
        ),
        (&["CLIENT", "KILL", "SKIPME", "yes_or_no"], "syntax error"),
        (&["CLIENT", "KILL", "1.2.3.4:5"], "No such client"),
    ] {
        assert!(error(&mut me, args).await.contains(text), "{args:?}");
    }
    let killed: i64 = q(&mut me, &["CLIENT", "KILL", "SKIPME", "yes"])
        .await
        .unwrap();
    assert_eq!(killed, 2);
    // Freed at once, as in Redis: not held while the victims, which keep
    // their sockets open, are waited for.
    let freed_by = std::time::Instant::now() + Duration::from_millis(200);
    loop {
        let info: String = q(&mut me, &["INFO", "clients"]).await.unwrap();
        if fields(&info)["connected_clients"] == "1" {
            break;
        }
        assert!(std::time::Instant::now() < freed_by, "{info}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for mut v in victims {
        expect_closed(&mut v).await;
    }
    assert_eq!(q::<String>(&mut me, &["PING"]).await.unwrap(), "PONG");
    // The old form names an address and replies +OK.
    let mut other = server.raw().await;
    crate::common::exchange(&mut other, b"CLIENT ID\r\n", b":").await;
    let list: String = q(&mut me, &["CLIENT", "LIST"]).await.unwrap();
    let addr = list
        .lines()
        .find(|l| !l.contains("cmd=client|list"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|a| a.strip_prefix("addr="))
        .expect("the other's address")
        .to_string();
    assert_eq!(
        q::<String>(&mut me, &["CLIENT", "KILL", &addr])
            .await
            .unwrap(),
        "OK"
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut other, &mut rest),
    )
    .await
    .expect("closed in time");
    server.stop().await;
}

#[tokio::test]
async fn config_set_changes_what_it_can_all_or_nothing() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    assert!(
        error(&mut c, &["CONFIG", "SET", "foo", "bar"])
            .await
            .contains("Unknown option or number of arguments for CONFIG SET - 'foo'")
    );
    assert!(
        error(&mut c, &["CONFIG", "SET", "timeout"])
            .await
            .contains("wrong number")
    );
    assert!(
        error(&mut c, &["CONFIG", "SET", "timeout", "1", "x"])
            .await
            .contains("syntax error")
    );
    // A bad value anywhere: nothing changes.
    let e = error(
        &mut c,
        &["CONFIG", "SET", "timeout", "5", "maxclients", "zero"],
    )
    .await;
    assert!(
        e.contains("CONFIG SET failed (possibly related to argument 'maxclients') - argument couldn't be parsed into an integer"),
        "{e}"
    );
    let e = error(&mut c, &["CONFIG", "SET", "timeout", "5", "timeout", "6"]).await;
    assert!(e.contains("duplicate parameter"), "{e}");
    let e = error(&mut c, &["CONFIG", "SET", "databases", "16"]).await;
    assert!(e.contains("can't set immutable config"), "{e}");
    let e = error(&mut c, &["CONFIG", "SET", "timeout", "-1"]).await;
    assert!(
        e.contains("argument must be between 0 and 2147483647 inclusive"),
        "{e}"
    );
    let now: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "timeout"]).await.unwrap();
    assert_eq!(now["timeout"], "0");
    // Accepted: the values say what ringkv does anyway.
    let _: () = q(&mut c, &["CONFIG", "SET", "save", "", "appendonly", "no"])
        .await
        .unwrap();
    let _: () = q(
        &mut c,
        &["CONFIG", "SET", "timeout", "7", "maxclients", "100"],
    )
    .await
    .unwrap();
    let now: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "timeout", "maxclients"])
        .await
        .unwrap();
    assert_eq!(
        (now["timeout"].as_str(), now["maxclients"].as_str()),
        ("7", "100")
    );
    let info: String = q(&mut c, &["INFO", "clients"]).await.unwrap();
    assert_eq!(fields(&info)["maxclients"], "100");
    // requirepass: new connections must authenticate; this one stays in.
    let _: () = q(&mut c, &["CONFIG", "SET", "requirepass", "pw"])
        .await
        .unwrap();
    let mut s = server.raw().await;
    crate::common::exchange(
        &mut s,
        b"GET k\r\n",
        b"-NOAUTH Authentication required.\r\n",
    )
    .await;
    crate::common::exchange(&mut s, b"AUTH pw\r\n", b"+OK\r\n").await;
    let _: () = q(&mut c, &["CONFIG", "SET", "requirepass", ""])
        .await
        .unwrap();
    let mut s = server.raw().await;
    crate::common::exchange(&mut s, b"GET k\r\n", b"$-1\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn maxclients_set_at_run_time_refuses_the_next_client() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let _: () = q(&mut c, &["CONFIG", "SET", "maxclients", "1"])
        .await
        .unwrap();
    let mut s = server.raw().await;
    crate::common::exchange(&mut s, b"", b"-ERR max number of clients reached\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn a_timeout_set_at_run_time_closes_idle_clients() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let _: () = q(&mut c, &["CONFIG", "SET", "timeout", "1"]).await.unwrap();
    let mut s = server.raw().await;
    let started = std::time::Instant::now();
    expect_closed(&mut s).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.stop().await;
}

#[tokio::test]
async fn info_sections_and_stats() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let _: () = q(&mut c, &["SET", "k", "v"]).await.unwrap();
    let _: Value = q(&mut c, &["GET", "k"]).await.unwrap();
    let _: Value = q(&mut c, &["GET", "nope"]).await.unwrap();
    let _ = error(&mut c, &["GET"]).await;
    let info: String = q(&mut c, &["INFO"]).await.unwrap();
    let f = fields(&info);
    for field in [
        "redis_version",
        "used_cpu_user",
        "used_cpu_sys",
        "used_memory",
        "connected_clients",
        "expired_keys",
        "evicted_keys",
        "master_repl_offset",
        "total_commands_processed",
    ] {
        assert!(f.contains_key(field), "{field} missing: {info}");
    }
    assert!(
        !info.contains("rejected_calls"),
        "commandstats only with all"
    );
    assert_eq!(f["keyspace_hits"], "1");
    assert_eq!(f["keyspace_misses"], "1");
    assert!(f["used_memory"].parse::<u64>().expect("a number") > 0);
    assert_eq!(f["db0"], "keys=1,expires=0,avg_ttl=0");
    let all: String = q(&mut c, &["INFO", "everything"]).await.unwrap();
    let f = fields(&all);
    assert!(
        f["cmdstat_get"].starts_with("calls=2,"),
        "{}",
        f["cmdstat_get"]
    );
    assert!(
        f["cmdstat_get"].ends_with("rejected_calls=1,failed_calls=0"),
        "{}",
        f["cmdstat_get"]
    );
    let cpu: String = q(&mut c, &["INFO", "CPU"]).await.unwrap();
    assert!(
        cpu.starts_with("# CPU\r\n") && !cpu.contains("used_memory"),
        "{cpu}"
    );
    let both: String = q(&mut c, &["INFO", "cpu", "default"]).await.unwrap();
    assert_eq!(both.matches("used_cpu_user_children").count(), 1);
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]).await.unwrap();
    let f = fields(&q::<String>(&mut c, &["INFO", "stats"]).await.unwrap());
    assert_eq!(f["keyspace_hits"], "0");
    let _: () = q(&mut c, &["DEL", "k"]).await.unwrap();
    let keyspace: String = q(&mut c, &["INFO", "keyspace"]).await.unwrap();
    assert_eq!(keyspace, "# Keyspace\r\n");
    let (secs, micros): (u64, u64) = q(&mut c, &["TIME"]).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(secs.abs_diff(now) < 5 && micros < 1_000_000);
    server.stop().await;
}

#[tokio::test]
async fn client_reply_off_and_skip_silence_replies() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    // SKIP silences itself and the next command; OFF until ON.
    s.write_all(b"CLIENT REPLY SKIP\r\nSET a 1\r\nGET a\r\n")
        .await
        .expect("write");
    crate::common::expect_reply(&mut s, b"$1\r\n1\r\n").await;
    s.write_all(b"CLIENT REPLY OFF\r\nSET a 2\r\nGET a\r\nCLIENT REPLY ON\r\nGET a\r\n")
        .await
        .expect("write");
    crate::common::expect_reply(&mut s, b"+OK\r\n$1\r\n2\r\n").await;
    crate::common::exchange(&mut s, b"CLIENT REPLY MAYBE\r\n", b"-ERR syntax error\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn startup_settings_are_immutable() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let e = error(&mut c, &["CONFIG", "SET", "daemonize", "yes"]).await;
    assert!(e.contains("can't set immutable config"), "{e}");
    let port: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "port"]).await.unwrap();
    assert_eq!(port["port"], server.addr.port().to_string());
    server.stop().await;
}

#[tokio::test]
async fn a_data_directory_shows_in_config_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let config = ringkv_cluster::ClusterConfig {
        fsync: ringkv_cluster::FsyncPolicy::Always,
        ..ringkv_cluster::ClusterConfig::default()
    };
    let cluster = Arc::new(ringkv_cluster::Cluster::open(dir.path(), config).unwrap());
    cluster.add_node("n1").unwrap();
    let server = start_with(Arc::clone(&cluster), ServerConfig::default()).await;
    let mut c = server.client().await;
    let now: HashMap<String, String> = q(
        &mut c,
        &["CONFIG", "GET", "appendonly", "appendfsync", "dir"],
    )
    .await
    .unwrap();
    assert_eq!(now["appendonly"], "yes");
    assert_eq!(now["appendfsync"], "always");
    assert_eq!(now["dir"], dir.path().display().to_string());
    let info: String = q(&mut c, &["INFO", "persistence"]).await.unwrap();
    assert!(info.contains("aof_enabled:1\r\n"), "{info}");
    assert!(info.contains("ringkv_fsync:always\r\n"), "{info}");
    let e = error(&mut c, &["CONFIG", "SET", "appendfsync", "no"]).await;
    assert!(e.contains("can't set immutable config"), "{e}");
    let _: () = q(&mut c, &["SET", "k", "v"]).await.unwrap();
    // The write log's queue is Redis's AOF buffer: in used_memory, not
    // counted for eviction, and empty once it reached the engine.
    let info: String = q(&mut c, &["INFO", "memory"]).await.unwrap();
    let mem = fields(&info);
    let buffer: u64 = mem["mem_aof_buffer"].parse().expect("a number");
    assert_eq!(mem["mem_not_counted_for_evict"], mem["mem_aof_buffer"]);
    assert!(
        mem["used_memory"].parse::<u64>().unwrap() > buffer,
        "{info}"
    );
    cluster.checkpoint().unwrap();
    let info: String = q(&mut c, &["INFO", "memory"]).await.unwrap();
    assert!(info.contains("mem_aof_buffer:0\r\n"), "{info}");
    assert_eq!(cluster.write_buffer_bytes(), 0);
}
