//! Per-client limits and shutdown: what a hostile or stuck client cannot
//! do to the server (each test sends raw bytes).

use std::sync::Arc;
use std::time::Duration;

use ringkv_cluster::{Cluster, ClusterConfig};
use ringkv_server::{MAX_CLIENTS_LIMIT, ServerConfig, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{PATIENCE, TestServer, exchange, expect_closed, expect_reply, resp, start};

fn with_password() -> ServerConfig {
    ServerConfig {
        requirepass: Some("pw".into()),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn before_auth_a_huge_bulk_or_many_arguments_are_refused_on_their_header() {
    let server = start(with_password()).await;
    // Only headers are sent: the refusal must not wait for the payload.
    for (header, error) in [
        (
            &b"*2\r\n$4\r\nAUTH\r\n$100000000\r\n"[..],
            &b"-ERR Protocol error: unauthenticated bulk length\r\n"[..],
        ),
        (
            b"*1000000\r\n",
            b"-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
        (
            b"*11\r\n",
            b"-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
    ] {
        let mut s = server.raw().await;
        exchange(&mut s, header, error).await;
        expect_closed(&mut s).await;
    }
    // Once authenticated, the server's own limits apply.
    let mut s = server.raw().await;
    exchange(&mut s, b"AUTH pw\r\n", b"+OK\r\n").await;
    let big = vec![b'v'; 100_000];
    exchange(&mut s, &resp(&[b"SET", b"big", &big]), b"+OK\r\n").await;
    let keys: Vec<&[u8]> = std::iter::once(&b"EXISTS"[..])
        .chain(std::iter::repeat_n(&b"big"[..], 20))
        .collect();
    exchange(&mut s, &resp(&keys), b":20\r\n").await;
    let summary = server.stop().await;
    assert_eq!(summary.protocol_errors, 3);
}

#[tokio::test]
async fn a_negative_multibulk_count_is_skipped_like_redis() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(&mut s, b"*-2\r\n*-1\r\nPING\r\n", b"+PONG\r\n").await;
    exchange(
        &mut s,
        b"*1\r\n$01\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    )
    .await;
    expect_closed(&mut s).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_client_is_closed_after_the_timeout() {
    let server = start(ServerConfig {
        idle_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let mut s = server.raw().await;
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n").await;
    expect_closed(&mut s).await;
    server.stop().await;
}

/// Reads `INFO` field `name` on a fresh connection.
async fn info_field(server: &TestServer, name: &str) -> String {
    let mut s = server.raw().await;
    s.write_all(b"INFO\r\n").await.unwrap();
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    let needle = format!("{name}:");
    loop {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("INFO in time")
            .unwrap();
        assert!(n > 0, "INFO ended early");
        text.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&text);
        if let Some(at) = text.find(&needle)
            && let Some(end) = text[at..].find("\r\n")
        {
            return text[at + needle.len()..at + end].to_string();
        }
    }
}

/// Polls `INFO connected_clients` until it reads `want` (at most PATIENCE).
async fn wait_connected(server: &TestServer, want: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // The connection asking counts itself.
    while info_field(server, "connected_clients").await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {want} clients"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `count` GETs of a `size`-byte value and reads the first bytes of
/// the first reply (so the server is writing), then stops reading.
async fn stuck_reader(server: &TestServer, size: usize, count: usize) -> tokio::net::TcpStream {
    server.cluster.put("huge", vec![b'h'; size]).unwrap();
    let mut s = server.raw().await;
    let gets = resp(&[b"GET", b"huge"]).repeat(count);
    s.write_all(&gets).await.unwrap();
    let mut first = [0u8; 4];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"$167");
    s
}

#[tokio::test]
async fn a_client_that_does_not_read_its_replies_times_out_too() {
    let server = start(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let _stuck = stuck_reader(&server, 16 * 1024 * 1024, 4).await;
    // The stuck client and the one asking.
    wait_connected(&server, "1").await;
    server.stop().await;
}

#[tokio::test]
async fn an_mget_past_the_output_limit_closes_the_client_before_building_it() {
    // The default limit (1 GiB) against 20,000 copies of a 100 KB value
    // (2 GB): refused after about half, without encoding any of it.
    let server = start(ServerConfig::default()).await;
    server.cluster.put("big", vec![b'b'; 100_000]).unwrap();
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 20_000));
    let mut s = server.raw().await;
    s.write_all(&resp(&args)).await.unwrap();
    expect_closed(&mut s).await;
    assert_eq!(
        info_field(&server, "client_output_buffer_limit_disconnections").await,
        "1"
    );
    // Everyone else is served.
    let mut other = server.raw().await;
    exchange(&mut other, b"STRLEN big\r\n", b":100000\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn replies_within_the_output_limit_are_sent_and_one_past_it_closes() {
    let server = start(ServerConfig {
        max_bulk_len: 100_000,
        client_output_buffer_limit: 250_000,
        ..ServerConfig::default()
    })
    .await;
    let value = vec![b'v'; 100_000];
    let mut s = server.raw().await;
    exchange(&mut s, &resp(&[b"SET", b"v", &value]), b"+OK\r\n").await;
    let mut two = b"*2\r\n".to_vec();
    for _ in 0..2 {
        two.extend(b"$100000\r\n");
        two.extend(&value);
        two.extend(b"\r\n");
    }
    exchange(&mut s, &resp(&[b"MGET", b"v", b"v"]), &two).await;
    s.write_all(&resp(&[b"MGET", b"v", b"v", b"v"]))
        .await
        .unwrap();
    expect_closed(&mut s).await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_drops_a_client_that_does_not_read_after_the_grace_period() {
    let server = start(ServerConfig {
        shutdown_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let _stuck = stuck_reader(&server, 16 * 1024 * 1024, 4).await;
    let summary = tokio::time::timeout(PATIENCE, server.shut_down())
        .await
        .expect("shutdown ends within the grace period (and some slack)")
        .expect("the server ran");
    assert_eq!(summary.dropped, 1);
}

#[tokio::test]
async fn a_second_signal_forces_the_shutdown() {
    let server = start(ServerConfig {
        shutdown_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    })
    .await;
    let _stuck = stuck_reader(&server, 16 * 1024 * 1024, 4).await;
    let summary = tokio::time::timeout(PATIENCE, server.shut_down_forced())
        .await
        .expect("the second signal ends the shutdown")
        .expect("the server ran");
    assert_eq!(summary.dropped, 1);
}

#[tokio::test]
async fn a_huge_max_clients_is_a_configuration_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig {
        max_clients: usize::MAX,
        ..ServerConfig::default()
    };
    let result = ringkv_server::run(
        listener,
        Arc::new(Cluster::default()),
        config,
        std::future::pending::<()>(),
    )
    .await;
    assert!(
        matches!(&result, Err(ServerError::Config(m)) if m.contains("max_clients")),
        "{result:?}"
    );
}

#[tokio::test]
async fn max_clients_is_lowered_to_the_open_file_limit() {
    let server = start(ServerConfig {
        max_clients: MAX_CLIENTS_LIMIT,
        ..ServerConfig::default()
    })
    .await;
    let mut s = server.raw().await;
    s.write_all(b"CONFIG GET maxclients\r\n").await.unwrap();
    let mut reply = vec![0u8; 256];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    let value: u64 = reply
        .split("\r\n")
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{reply:?}"));
    assert!(value < MAX_CLIENTS_LIMIT as u64, "{reply:?}");
    if let Some(soft) = crate::common::open_file_limit() {
        assert_eq!(value, soft - 32, "{reply:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn cluster_errors_carry_redis_codes() {
    let empty = Arc::new(Cluster::new(ClusterConfig::default()).unwrap());
    let server = crate::common::start_with(empty, ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(
        &mut s,
        b"GET k\r\n",
        b"-CLUSTERDOWN the cluster has no nodes; add a node first\r\n",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn config_get_survives_hostile_patterns() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    let stars = vec![b'*'; 60_000];
    let max_clients = crate::common::expected_max_clients(10_000).to_string();
    let mut expect = b"*2\r\n$10\r\nmaxclients\r\n".to_vec();
    expect.extend(format!("${}\r\n{max_clients}\r\n", max_clients.len()).as_bytes());
    let mut pattern = stars.clone();
    pattern.extend(b"clients");
    exchange(&mut s, &resp(&[b"CONFIG", b"GET", &pattern]), &expect).await;
    let mut backtracking = b"*".repeat(30);
    backtracking.push(b'x');
    exchange(
        &mut s,
        &resp(&[b"CONFIG", b"GET", &backtracking]),
        b"*0\r\n",
    )
    .await;
    let too_long = vec![b'*'; 70_000];
    s.write_all(&resp(&[b"CONFIG", b"GET", &too_long]))
        .await
        .unwrap();
    expect_reply(
        &mut s,
        b"-ERR pattern of 70000 bytes is too long: at most 65536 bytes are allowed\r\n",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_long_pipeline_does_not_hold_up_other_clients() {
    // One runtime thread: the server interleaves clients only if a client
    // with many requests buffered yields between them.
    let server = start(ServerConfig::default()).await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    exchange(&mut a, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut b, b"PING\r\n", b"+PONG\r\n").await;
    const PIPELINE: usize = 20_000;
    let pipeline = b"INCR c\r\n".repeat(PIPELINE);
    let writer = tokio::spawn(async move {
        a.write_all(&pipeline).await.unwrap();
        let mut replies = Vec::new();
        while replies.len() < PIPELINE * 4 {
            let mut chunk = [0u8; 65536];
            let n = a.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            replies.extend_from_slice(&chunk[..n]);
        }
    });
    // Let A's pipeline reach the server first.
    tokio::task::yield_now().await;
    b.write_all(b"GET c\r\n").await.unwrap();
    let mut reply = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, b.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&reply[..n]).to_string();
    let seen: usize = text
        .split("\r\n")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    writer.await.unwrap();
    assert!(
        seen < PIPELINE,
        "B waited for all of A's pipeline: {text:?}"
    );
    server.stop().await;
}
