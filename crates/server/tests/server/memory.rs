//! maxmemory through CONFIG SET: noeviction refuses writes with Redis's
//! OOM error and writes nothing; an eviction policy makes room.

use std::collections::HashMap;

use ringkv_server::ServerConfig;

use crate::client::{error, q};
use crate::common::start;

#[tokio::test]
async fn writes_over_maxmemory_are_refused_or_evict() {
    let server = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    for i in 0..50 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), &"x".repeat(100)])
            .await
            .unwrap();
    }
    let info: String = q(&mut c, &["INFO", "memory"]).await.unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.parse().ok())
        .expect("used_memory");
    assert!(used >= 50 * 100, "{info}");
    let _: () = q(&mut c, &["CONFIG", "SET", "maxmemory", &used.to_string()])
        .await
        .unwrap();
    let e = error(&mut c, &["SET", "big", &"y".repeat(1000)]).await;
    // The client crate shows the code apart: `"OOM": command ...`.
    assert!(
        e.contains("OOM") && e.contains("command not allowed when used memory > 'maxmemory'."),
        "{e}"
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "big"]).await.unwrap(), 0);
    let e = error(&mut c, &["CONFIG", "SET", "maxmemory-policy", "sometimes"]).await;
    assert!(
        e.contains("CONFIG SET failed (possibly related to argument 'maxmemory-policy')"),
        "{e}"
    );
    let e = error(&mut c, &["CONFIG", "SET", "maxmemory", "lots"]).await;
    assert!(e.contains("argument must be a memory value"), "{e}");
    let _: () = q(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"],
    )
    .await
    .unwrap();
    let _: () = q(&mut c, &["SET", "big", &"y".repeat(1000)]).await.unwrap();
    let now: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "maxmemory*"]).await.unwrap();
    assert_eq!(now["maxmemory-policy"], "allkeys-random");
    assert_eq!(now["maxmemory"], used.to_string());
    let info: String = q(&mut c, &["INFO", "stats"]).await.unwrap();
    assert!(!info.contains("evicted_keys:0\r\n"), "{info}");
    let _: () = q(&mut c, &["CONFIG", "SET", "maxmemory", "1kb"])
        .await
        .unwrap();
    let now: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "maxmemory"]).await.unwrap();
    assert_eq!(now["maxmemory"], "1024");
    server.stop().await;
}

#[tokio::test]
async fn a_write_queued_over_maxmemory_is_refused_and_aborts_exec() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    crate::common::exchange(&mut s, b"SET a 1\r\n", b"+OK\r\n").await;
    crate::common::exchange(&mut s, b"CONFIG SET maxmemory 1\r\n", b"+OK\r\n").await;
    crate::common::exchange(&mut s, b"MULTI\r\n", b"+OK\r\n").await;
    crate::common::exchange(
        &mut s,
        b"SET x 1\r\n",
        b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    )
    .await;
    // Reads still queue; DISCARD works.
    crate::common::exchange(&mut s, b"GET a\r\n", b"+QUEUED\r\n").await;
    crate::common::exchange(&mut s, b"DISCARD\r\n", b"+OK\r\n").await;
    crate::common::exchange(&mut s, b"MULTI\r\n", b"+OK\r\n").await;
    crate::common::exchange(
        &mut s,
        b"SET x 1\r\n",
        b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    )
    .await;
    crate::common::exchange(
        &mut s,
        b"EXEC\r\n",
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    crate::common::exchange(&mut s, b"EXISTS x\r\n", b":0\r\n").await;
    server.stop().await;
}
