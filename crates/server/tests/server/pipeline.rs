//! Pipelined SETs with a data directory run as one write (one engine
//! commit); these tests check that a client cannot tell: the same
//! pipeline gets byte-for-byte the same replies, leaves the same data and
//! the same command counts as on a server without a data directory, where
//! each SET runs alone, also when the group cannot be written whole and
//! falls back to one SET at a time (a memory limit that only some fit
//! under).

use std::sync::Arc;

use ringkv_cluster::{Cluster, ClusterConfig, Placement};
use ringkv_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestServer, resp, show, start_with};

fn config() -> ClusterConfig {
    ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 256 },
        ..ClusterConfig::default()
    }
}

/// A server over node1..node3, in memory or in `dir`.
async fn server(dir: Option<&std::path::Path>, maxmemory: u64) -> TestServer {
    let cluster = match dir {
        Some(dir) => Cluster::open(dir, config()).expect("open"),
        None => Cluster::new(config()).expect("config"),
    };
    for id in ["node1", "node2", "node3"] {
        cluster.add_node(id).expect("add node");
    }
    cluster.set_maxmemory(maxmemory);
    start_with(Arc::new(cluster), ServerConfig::default()).await
}

/// Sends `pipeline` in one write, then PING, and returns every byte
/// before the PONG.
async fn replies(server: &TestServer, pipeline: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = server.raw().await;
    let mut bytes: Vec<u8> = pipeline.concat();
    bytes.extend(resp(&[b"PING"]));
    stream.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"+PONG\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("replies in time")
            .expect("read");
        assert!(n > 0, "closed after {:?}", show(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got.truncate(got.len() - b"+PONG\r\n".len());
    got
}

/// Runs `pipeline` on a server with a data directory and on one without,
/// both fresh with `maxmemory`, and checks they answer, store and count
/// alike. Returns the replies.
async fn alike(pipeline: &[Vec<u8>], keys: &[Vec<u8>], maxmemory: u64) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = server(Some(dir.path()), maxmemory).await;
    let memory = server(None, maxmemory).await;
    let (a, b) = (
        replies(&disk, pipeline).await,
        replies(&memory, pipeline).await,
    );
    assert_eq!(
        show(&a),
        show(&b),
        "replies with and without a data directory"
    );
    for key in keys {
        let get = resp(&[b"GET", key]);
        assert_eq!(
            show(&replies(&disk, std::slice::from_ref(&get)).await),
            show(&replies(&memory, &[get]).await),
            "GET {}",
            show(key)
        );
    }
    let stats = resp(&[b"INFO", b"commandstats"]);
    let calls = |info: Vec<u8>| -> Vec<String> {
        String::from_utf8(info)
            .expect("UTF-8")
            .lines()
            .filter(|l| l.starts_with("cmdstat_set:") || l.starts_with("cmdstat_get:"))
            .map(|l| l.split(",usec").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(
        calls(replies(&disk, std::slice::from_ref(&stats)).await),
        calls(replies(&memory, &[stats]).await),
        "command counts"
    );
    memory.stop().await;
    disk.stop().await;
    show(&a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_sets_answers_as_one_set_at_a_time() {
    let mut pipeline = Vec::new();
    let mut keys = Vec::new();
    for i in 0..150 {
        let key = format!("k{}", i % 40).into_bytes();
        let value = format!("v{i}").into_bytes();
        // Runs of plain SETs broken by reads, options, other commands,
        // errors, lowercase names and repeated keys.
        match i % 23 {
            5 => pipeline.push(resp(&[b"GET", &key])),
            9 => pipeline.push(resp(&[b"SET", &key, &value, b"EX", b"100"])),
            12 => pipeline.push(resp(&[b"SET", &key])),
            15 => pipeline.push(resp(&[b"set", &key, &value])),
            17 => pipeline.push(resp(&[b"DEL", &key])),
            19 => pipeline.push(resp(&[b"SET", &key, &value, b"NX"])),
            _ => pipeline.push(resp(&[b"SET", &key, &value])),
        }
        keys.push(key);
    }
    let answered = alike(&pipeline, &keys, 0).await;
    assert!(answered.contains("wrong number of arguments"), "{answered}");
}

/// Under a memory limit that only some of the run fits under, the run
/// cannot be written whole: each SET then runs alone, the first ones
/// stored and the rest refused, exactly as without grouping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_the_memory_limit_falls_back_to_one_set_at_a_time() {
    let value = vec![b'x'; 1000];
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("big{i}").into_bytes()).collect();
    let pipeline: Vec<Vec<u8>> = keys.iter().map(|k| resp(&[b"SET", k, &value])).collect();
    // Room for about ten of them.
    let answered = alike(&pipeline, &keys, 11_000).await;
    assert!(answered.starts_with("+OK"), "{answered}");
    assert!(answered.contains("-OOM"), "{answered}");
}
