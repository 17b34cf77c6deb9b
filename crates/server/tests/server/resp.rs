//! Byte-level tests: exact request and reply bytes on a raw TCP stream.

use std::time::Duration;

use ringkv_server::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{PATIENCE, exchange, expect_closed, expect_reply, resp, start};

#[tokio::test]
async fn ping_as_array_and_inline() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(&mut s, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n").await;
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut s, b"ping \"hello world\"\n", b"$11\r\nhello world\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn replies_are_byte_exact_and_binary_safe() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    let value: &[u8] = b"a\r\nb\x00c";
    exchange(&mut s, &resp(&[b"SET", b"k\r\n", value]), b"+OK\r\n").await;
    exchange(&mut s, &resp(&[b"GET", b"k\r\n"]), b"$6\r\na\r\nb\x00c\r\n").await;
    exchange(&mut s, &resp(&[b"GET", b"nope"]), b"$-1\r\n").await;
    exchange(&mut s, &resp(&[b"SET", b"k\r\n", b"v", b"NX"]), b"$-1\r\n").await;
    exchange(
        &mut s,
        &resp(&[b"EXISTS", b"k\r\n", b"k\r\n", b"x"]),
        b":2\r\n",
    )
    .await;
    exchange(
        &mut s,
        &resp(&[b"MGET", b"k\r\n", b"x"]),
        b"*2\r\n$6\r\na\r\nb\x00c\r\n$-1\r\n",
    )
    .await;
    exchange(&mut s, &resp(&[b"STRLEN", b"k\r\n"]), b":6\r\n").await;
    exchange(&mut s, &resp(&[b"INCR", b"n"]), b":1\r\n").await;
    exchange(&mut s, &resp(&[b"DECRBY", b"n", b"5"]), b":-4\r\n").await;
    exchange(&mut s, &resp(&[b"DEL", b"k\r\n", b"n", b"x"]), b":2\r\n").await;
    exchange(&mut s, &resp(&[b"DBSIZE"]), b":0\r\n").await;
    exchange(&mut s, &resp(&[b"ECHO", b""]), b"$0\r\n\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn a_pipeline_gets_every_reply_in_order() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    let (mut send, mut expect) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let key = format!("key{i}");
        send.extend(resp(&[b"SET", key.as_bytes(), key.as_bytes()]));
        send.extend(resp(&[b"INCR", b"counter"]));
        send.extend(format!("GET {key}\r\n").as_bytes());
        expect.extend(b"+OK\r\n");
        expect.extend(format!(":{}\r\n", i + 1).as_bytes());
        expect.extend(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    exchange(&mut s, &send, &expect).await;
    assert_eq!(server.cluster.stats().total_keys, 301);
    server.stop().await;
}

#[tokio::test]
async fn a_request_split_into_many_writes_is_served_once() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    for byte in resp(&[b"SET", b"split", b"value"]) {
        s.write_all(&[byte]).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    expect_reply(&mut s, b"+OK\r\n").await;
    exchange(&mut s, b"GET split\r\n", b"$5\r\nvalue\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn empty_requests_get_no_reply() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(&mut s, b"\r\n*0\r\n  \r\nPING\r\n", b"+PONG\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn command_errors_keep_the_connection_open() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(
        &mut s,
        b"FOO bar baz\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n",
    )
    .await;
    exchange(
        &mut s,
        &resp(&[b"GET"]),
        b"-ERR wrong number of arguments for 'get' command\r\n",
    )
    .await;
    exchange(
        &mut s,
        b"MSET a 1 b\r\n",
        b"-ERR wrong number of arguments for 'mset' command\r\n",
    )
    .await;
    exchange(&mut s, b"SET a 1 NX XX\r\n", b"-ERR syntax error\r\n").await;
    exchange(
        &mut s,
        b"SET a b\r\nINCR a\r\n",
        b"+OK\r\n-ERR value is not an integer or out of range\r\n",
    )
    .await;
    exchange(&mut s, b"GET a\r\n", b"$1\r\nb\r\n").await;
    // No bad request changed anything.
    exchange(&mut s, b"DBSIZE\r\n", b":1\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_a_protocol_error_and_close() {
    let server = start(ServerConfig::default()).await;
    let set_after = resp(&[b"SET", b"smuggled", b"1"]);
    let cases: [(&[u8], &[u8]); 6] = [
        (
            b"*1\r\n+PING\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*1\r\n*1\r\n$4\r\nPING\r\n",
            b"-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            b"*x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$x\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"GET \"open\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (bad, error) in cases {
        let mut s = server.raw().await;
        let mut send = bad.to_vec();
        send.extend(&set_after);
        exchange(&mut s, &send, error).await;
        expect_closed(&mut s).await;
    }
    assert_eq!(server.cluster.get(b"smuggled").unwrap(), None);
    let summary = server.stop().await;
    assert_eq!(summary.protocol_errors, 6);
}

#[tokio::test]
async fn a_bulk_over_the_limit_is_refused_before_it_arrives() {
    let config = ServerConfig {
        max_bulk_len: 1024,
        ..ServerConfig::default()
    };
    let server = start(config).await;
    let mut s = server.raw().await;
    let fits = vec![b'x'; 1024];
    exchange(&mut s, &resp(&[b"SET", b"k", &fits]), b"+OK\r\n").await;
    // Only the header of the oversize value is sent: the refusal must not
    // wait for its bytes.
    exchange(
        &mut s,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    )
    .await;
    expect_closed(&mut s).await;
    // A header line that never ends is refused too.
    let mut s = server.raw().await;
    let mut endless = b"*1\r\n$".to_vec();
    endless.extend(vec![b'9'; 70 * 1024]);
    exchange(
        &mut s,
        &endless,
        b"-ERR Protocol error: too big bulk count string\r\n",
    )
    .await;
    expect_closed(&mut s).await;
    assert_eq!(
        server.cluster.get(b"k").unwrap().as_deref(),
        Some(&fits[..])
    );
    server.stop().await;
}

#[tokio::test]
async fn clients_over_the_limit_are_told_and_closed() {
    let config = ServerConfig {
        max_clients: 2,
        ..ServerConfig::default()
    };
    let server = start(config).await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    exchange(&mut a, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut b, b"PING\r\n", b"+PONG\r\n").await;
    let mut c = server.raw().await;
    expect_reply(&mut c, b"-ERR max number of clients reached\r\n").await;
    expect_closed(&mut c).await;
    // Once a client leaves, a new one is served (its slot is freed when
    // the server notices the close, so allow a few tries).
    exchange(&mut a, b"QUIT\r\n", b"+OK\r\n").await;
    expect_closed(&mut a).await;
    let mut served = false;
    for _ in 0..100 {
        let mut d = server.raw().await;
        d.write_all(b"PING\r\n").await.unwrap();
        let mut reply = [0u8; 7];
        if tokio::io::AsyncReadExt::read_exact(&mut d, &mut reply)
            .await
            .is_ok()
            && &reply == b"+PONG\r\n"
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a slot was freed");
    exchange(&mut b, b"PING\r\n", b"+PONG\r\n").await;
    let summary = server.stop().await;
    assert!(summary.rejected >= 1);
}

#[tokio::test]
async fn quit_replies_then_closes() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(&mut s, b"QUIT\r\nPING\r\n", b"+OK\r\n").await;
    expect_closed(&mut s).await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_serves_requests_in_flight_then_closes() {
    let cluster = crate::common::cluster();
    for i in 0..20_000 {
        cluster.put(format!("pre{i}"), "v").unwrap();
    }
    let server = crate::common::start_with(cluster, ServerConfig::default()).await;
    let addr = server.addr;
    let mut s = server.raw().await;
    let mut admin = server.raw().await;
    // Both connections are accepted before the shutdown starts.
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut admin, b"PING\r\n", b"+PONG\r\n").await;
    let mut send = Vec::new();
    let mut expect = Vec::new();
    for i in 0..100 {
        send.extend(resp(&[b"SET", format!("k{i}").as_bytes(), b"v"]));
        expect.extend(b"+OK\r\n");
    }
    s.write_all(&send).await.unwrap();
    admin.write_all(b"RINGKV.ADDNODE node4\r\n").await.unwrap();
    // Shut down once the server has read both: the last SET applied, and
    // the change started.
    let cluster = server.cluster.clone();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cluster.get(b"k99").unwrap().is_none()
        || !(cluster.stats().rebalancing || cluster.members().iter().any(|m| m.as_str() == "node4"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never read"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let summary = tokio::spawn(server.stop());
    expect_reply(&mut s, &expect).await;
    expect_closed(&mut s).await;
    expect_reply(&mut admin, b"*18\r\n$2\r\nop\r\n$8\r\nadd_node\r\n").await;
    let summary = summary.await.unwrap();
    assert_eq!(summary.commands, 103);
    assert_eq!(summary.dropped, 0, "every connection drained");
    assert!(cluster.members().iter().any(|m| m.as_str() == "node4"));
    assert_eq!(cluster.stats().total_keys, 20_100);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// `ringkv serve` is one server, not a Redis Cluster: `CLUSTER` answers as
/// a Redis server without cluster mode does, and INFO says so.
#[tokio::test]
async fn cluster_commands_say_cluster_support_is_disabled() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    for sub in [&b"SLOTS"[..], b"NODES", b"KEYSLOT"] {
        exchange(
            &mut s,
            &resp(&[b"CLUSTER", sub]),
            b"-ERR This instance has cluster support disabled\r\n",
        )
        .await;
    }
    exchange(
        &mut s,
        &resp(&[b"INFO", b"cluster"]),
        b"$30\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n",
    )
    .await;
    server.stop().await;
}

/// `SHUTDOWN` stops the server as a first SIGTERM does: replies before it
/// go out, it has none (the connection just closes, which is how redis-py
/// and redis-cli know it worked), other connections drain, and nothing
/// is accepted afterwards.
#[tokio::test]
async fn shutdown_stops_the_server_and_closes_without_a_reply() {
    let server = start(ServerConfig::default()).await;
    let (addr, cluster) = (server.addr, server.cluster.clone());
    let mut s = server.raw().await;
    let mut other = server.raw().await;
    exchange(&mut other, b"PING\r\n", b"+PONG\r\n").await;
    let mut send = resp(&[b"SET", b"k", b"v"]);
    send.extend(resp(&[b"SHUTDOWN", b"NOSAVE"]));
    send.extend(resp(&[b"SET", b"after", b"v"]));
    s.write_all(&send).await.unwrap();
    expect_reply(&mut s, b"+OK\r\n").await;
    expect_closed(&mut s).await;
    expect_closed(&mut other).await;
    let summary = server.stopped().await;
    assert_eq!(summary.dropped, 0, "every connection drained");
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        cluster.get(b"after").unwrap(),
        None,
        "nothing after SHUTDOWN runs"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Bad `SHUTDOWN` options, `ABORT`, and `SHUTDOWN` queued in `MULTI` are
/// answered with errors, and the server goes on.
#[tokio::test]
async fn shutdown_refuses_bad_options_and_keeps_serving() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    for (args, reply) in [
        (
            &[&b"SHUTDOWN"[..], b"SAVE", b"NOSAVE"][..],
            &b"-ERR syntax error\r\n"[..],
        ),
        (&[b"SHUTDOWN", b"LATER"], b"-ERR syntax error\r\n"),
        (&[b"SHUTDOWN", b"ABORT", b"NOW"], b"-ERR syntax error\r\n"),
        (
            &[b"SHUTDOWN", b"ABORT"],
            b"-ERR No shutdown in progress.\r\n",
        ),
    ] {
        exchange(&mut s, &resp(args), reply).await;
    }
    // As Redis 7 (its Tcl test `MULTI with SHUTDOWN`): refused with its
    // text, and the transaction aborts.
    exchange(&mut s, b"MULTI\r\n", b"+OK\r\n").await;
    exchange(&mut s, &resp(&[b"SET", b"foo", b"bar"]), b"+QUEUED\r\n").await;
    exchange(
        &mut s,
        &resp(&[b"SHUTDOWN"]),
        b"-ERR Command not allowed inside a transaction\r\n",
    )
    .await;
    exchange(
        &mut s,
        b"EXEC\r\n",
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    exchange(&mut s, &resp(&[b"GET", b"foo"]), b"$-1\r\n").await;
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n").await;
    server.stop().await;
}

/// With a password, `SHUTDOWN` before `AUTH` is refused and stops nothing.
#[tokio::test]
async fn shutdown_needs_authentication() {
    let config = ServerConfig {
        requirepass: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let server = start(config).await;
    let mut s = server.raw().await;
    let mut buf = [0u8; 64];
    s.write_all(&resp(&[b"SHUTDOWN"])).await.unwrap();
    let n = tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
        .await
        .expect("a reply in time")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"-NOAUTH"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    exchange(&mut s, &resp(&[b"AUTH", b"s3cret"]), b"+OK\r\n").await;
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n").await;
    server.stop().await;
}
