//! MULTI/EXEC/DISCARD/WATCH with Redis's semantics, and transfers between
//! keys that keep their sum while nodes join and leave.

use std::sync::Arc;

use redis::Value;
use ringkv_server::ServerConfig;

use crate::client::{error, q};
use crate::common::{exchange, start};

#[tokio::test]
async fn queued_commands_run_at_exec() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(&mut s, b"MULTI\r\n", b"+OK\r\n").await;
    exchange(&mut s, b"SET a 1\r\n", b"+QUEUED\r\n").await;
    exchange(&mut s, b"INCR a\r\n", b"+QUEUED\r\n").await;
    exchange(&mut s, b"GET a\r\n", b"+QUEUED\r\n").await;
    // A run-time error is one reply of the array; the rest runs.
    exchange(&mut s, b"INCRBY a x\r\n", b"+QUEUED\r\n").await;
    exchange(&mut s, b"MSET b 2 c 3\r\n", b"+QUEUED\r\n").await;
    exchange(
        &mut s,
        b"EXEC\r\n",
        b"*5\r\n+OK\r\n:2\r\n$1\r\n2\r\n-ERR value is not an integer or out of range\r\n+OK\r\n",
    )
    .await;
    // Errors of MULTI itself.
    exchange(&mut s, b"EXEC\r\n", b"-ERR EXEC without MULTI\r\n").await;
    exchange(&mut s, b"DISCARD\r\n", b"-ERR DISCARD without MULTI\r\n").await;
    exchange(&mut s, b"MULTI\r\n", b"+OK\r\n").await;
    exchange(
        &mut s,
        b"MULTI\r\n",
        b"-ERR MULTI calls can not be nested\r\n",
    )
    .await;
    exchange(
        &mut s,
        b"WATCH a\r\n",
        b"-ERR WATCH inside MULTI is not allowed\r\n",
    )
    .await;
    exchange(&mut s, b"SET a 100\r\n", b"+QUEUED\r\n").await;
    exchange(&mut s, b"DISCARD\r\n", b"+OK\r\n").await;
    exchange(&mut s, b"GET a\r\n", b"$1\r\n2\r\n").await;
    // A queue-time error aborts the whole transaction.
    exchange(&mut s, b"MULTI\r\n", b"+OK\r\n").await;
    exchange(&mut s, b"SET a 100\r\n", b"+QUEUED\r\n").await;
    exchange(
        &mut s,
        b"GET\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    )
    .await;
    exchange(
        &mut s,
        b"EXEC\r\n",
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    exchange(&mut s, b"GET a\r\n", b"$1\r\n2\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn watch_aborts_exec_when_a_key_changes() {
    let server = start(ServerConfig::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let _: () = q(&mut a, &["SET", "w", "1"]).await.unwrap();
    let _: () = q(&mut a, &["WATCH", "w"]).await.unwrap();
    let _: () = q(&mut b, &["SET", "w", "2"]).await.unwrap();
    let _: () = q(&mut a, &["MULTI"]).await.unwrap();
    let _: () = q(&mut a, &["SET", "w", "3"]).await.unwrap();
    assert_eq!(q::<Value>(&mut a, &["EXEC"]).await.unwrap(), Value::Nil);
    assert_eq!(q::<String>(&mut a, &["GET", "w"]).await.unwrap(), "2");
    // Unchanged: runs. UNWATCH forgets.
    let _: () = q(&mut a, &["WATCH", "w", "absent"]).await.unwrap();
    let _: () = q(&mut a, &["MULTI"]).await.unwrap();
    let _: () = q(&mut a, &["SET", "w", "4"]).await.unwrap();
    assert_eq!(
        q::<Vec<String>>(&mut a, &["EXEC"]).await.unwrap(),
        vec!["OK"]
    );
    let _: () = q(&mut a, &["WATCH", "w"]).await.unwrap();
    let _: () = q(&mut b, &["SET", "w", "5"]).await.unwrap();
    let _: () = q(&mut a, &["UNWATCH"]).await.unwrap();
    let _: () = q(&mut a, &["MULTI"]).await.unwrap();
    let _: () = q(&mut a, &["GET", "w"]).await.unwrap();
    assert_eq!(
        q::<Vec<String>>(&mut a, &["EXEC"]).await.unwrap(),
        vec!["5"]
    );
    assert!(error(&mut a, &["WATCH"]).await.contains("wrong number"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_keep_their_sum_while_nodes_join_and_leave() {
    let server = Arc::new(start(ServerConfig::default()).await);
    let accounts = 10;
    let mut c = server.client().await;
    for i in 0..accounts {
        let _: () = q(&mut c, &["SET", &format!("acct{i}"), "100"])
            .await
            .unwrap();
    }
    let cluster = server.cluster.clone();
    let churn = tokio::task::spawn_blocking(move || {
        for round in 0..3 {
            let id = format!("extra{round}");
            cluster.add_node(&id).expect("add");
            cluster.remove_node(&id).expect("remove");
        }
    });
    let mut clients = Vec::new();
    for t in 0..4u64 {
        let server = Arc::clone(&server);
        clients.push(tokio::spawn(async move {
            let mut c = server.client().await;
            let mut seed = t * 7919 + 1;
            for _ in 0..100 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = format!("acct{}", (seed >> 33) % 10);
                let to = format!("acct{}", (seed >> 40) % 10);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("DECRBY")
                    .arg(&from)
                    .arg(3)
                    .cmd("INCRBY")
                    .arg(&to)
                    .arg(3);
                let _: (i64, i64) = pipe.query_async(&mut c).await.expect("transfer");
                // Between transfers, a transaction reads a consistent sum.
                let mut read = redis::pipe();
                read.atomic();
                for i in 0..10 {
                    read.cmd("GET").arg(format!("acct{i}"));
                }
                let values: Vec<i64> = read.query_async(&mut c).await.expect("read");
                assert_eq!(values.iter().sum::<i64>(), 1000, "seed {t}");
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    churn.await.expect("churn");
    match Arc::try_unwrap(server) {
        Ok(server) => {
            server.stop().await;
        }
        Err(_) => panic!("the server is shared no more"),
    }
}
