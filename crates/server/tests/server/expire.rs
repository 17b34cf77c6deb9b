//! Expiry through the server: SET options, SETEX/PSETEX/GETEX, the EXPIRE
//! family with NX/XX/GT/LT, TTL and friends, PERSIST, TYPE, TOUCH, and the
//! background reclaim. The cluster runs on a manual clock, so keys expire
//! without sleeping.

use std::sync::Arc;

use redis::Value;
use ringkv_cluster::{Cluster, ClusterConfig, ManualClock};
use ringkv_server::ServerConfig;

use crate::client::{error, q};
use crate::common::{TestServer, start_with};

const T0: u64 = 1_700_000_000_000;

async fn server_with_clock() -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let cluster = Cluster::new(ClusterConfig {
        clock: clock.clone().into(),
        ..ClusterConfig::default()
    })
    .expect("valid config");
    for id in ["node1", "node2"] {
        cluster.add_node(id).expect("fresh node");
    }
    (
        start_with(Arc::new(cluster), ServerConfig::default()).await,
        clock,
    )
}

#[tokio::test]
async fn set_options_and_ttls() {
    let (server, clock) = server_with_clock().await;
    let mut c = server.client().await;
    let _: () = q(&mut c, &["SET", "k", "v", "EX", "10"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]).await.unwrap(), 10);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "k"]).await.unwrap(), 10_000);
    assert_eq!(
        q::<i64>(&mut c, &["PEXPIRETIME", "k"]).await.unwrap(),
        (T0 + 10_000) as i64
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRETIME", "k"]).await.unwrap(),
        (T0 / 1000 + 10) as i64
    );
    // KEEPTTL keeps it, a plain SET clears it, GET returns the old value.
    let _: () = q(&mut c, &["SET", "k", "v2", "KEEPTTL"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]).await.unwrap(), 10);
    assert_eq!(
        q::<String>(&mut c, &["SET", "k", "v3", "GET"])
            .await
            .unwrap(),
        "v2"
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]).await.unwrap(), -1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "nope"]).await.unwrap(), -2);
    // NX/XX with an expiry.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "k", "x", "NX", "PX", "50"])
            .await
            .unwrap(),
        Value::Nil
    );
    let _: () = q(&mut c, &["SET", "k", "x", "XX", "PX", "50"])
        .await
        .unwrap();
    clock.advance(50);
    assert_eq!(
        q::<String>(&mut c, &["GET", "k"]).await.unwrap(),
        "x",
        "live at its expiry"
    );
    clock.advance(1);
    assert_eq!(q::<Value>(&mut c, &["GET", "k"]).await.unwrap(), Value::Nil);
    // EXAT/PXAT, SETEX, PSETEX.
    let at = (T0 / 1000 + 100).to_string();
    let _: () = q(&mut c, &["SET", "a", "1", "EXAT", &at]).await.unwrap();
    assert!(q::<i64>(&mut c, &["TTL", "a"]).await.unwrap() > 90);
    let _: () = q(&mut c, &["SETEX", "b", "5", "v"]).await.unwrap();
    let _: () = q(&mut c, &["PSETEX", "p", "5", "v"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["PTTL", "p"]).await.unwrap(), 5);
    // Bad expiries: Redis's texts, nothing written.
    for (args, text) in [
        (
            &["SET", "z", "v", "EX", "0"][..],
            "invalid expire time in 'set' command",
        ),
        (
            &["SET", "z", "v", "EX", "-5"],
            "invalid expire time in 'set' command",
        ),
        (
            &["SET", "z", "v", "PX", "x"],
            "value is not an integer or out of range",
        ),
        (&["SET", "z", "v", "EX", "1", "PX", "1"], "syntax error"),
        (&["SET", "z", "v", "EX", "1", "KEEPTTL"], "syntax error"),
        (
            &["SET", "z", "v", "EX", "9223372036854775807"],
            "invalid expire time in 'set' command",
        ),
        (
            &["SETEX", "z", "0", "v"],
            "invalid expire time in 'setex' command",
        ),
        (
            &["PSETEX", "z", "-1", "v"],
            "invalid expire time in 'psetex' command",
        ),
        (
            &["GETEX", "a", "EX", "0"],
            "invalid expire time in 'getex' command",
        ),
        (&["GETEX", "a", "PERSIST", "EX", "1"], "syntax error"),
    ] {
        let e = error(&mut c, args).await;
        assert!(e.contains(text), "{args:?}: {e}");
    }
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "z"]).await.unwrap(), 0);
    // GETEX changes the expiry and returns the value.
    assert_eq!(
        q::<String>(&mut c, &["GETEX", "a", "PX", "1234"])
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(q::<i64>(&mut c, &["PTTL", "a"]).await.unwrap(), 1234);
    assert_eq!(
        q::<String>(&mut c, &["GETEX", "a", "PERSIST"])
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "a"]).await.unwrap(), -1);
    assert_eq!(
        q::<Value>(&mut c, &["GETEX", "nope", "EX", "1"])
            .await
            .unwrap(),
        Value::Nil
    );
    server.stop().await;
}

#[tokio::test]
async fn expire_family_with_conditions() {
    let (server, clock) = server_with_clock().await;
    let mut c = server.client().await;
    let _: () = q(&mut c, &["SET", "k", "v"]).await.unwrap();
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "nope", "10"]).await.unwrap(),
        0
    );
    // GT on a persistent key never sets (an infinite TTL); LT does.
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "k", "100", "GT"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "k", "100", "XX"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "k", "100", "LT"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "k", "50", "NX"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "k", "200", "GT"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "k", "300", "LT"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]).await.unwrap(), 200);
    assert_eq!(
        q::<i64>(&mut c, &["PEXPIRE", "k", "1500"]).await.unwrap(),
        1
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]).await.unwrap(), 2, "rounded");
    let at = ((T0 + 5_000) / 1000).to_string();
    assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "k", &at]).await.unwrap(), 1);
    assert_eq!(
        q::<i64>(&mut c, &["PEXPIREAT", "k", &(T0 + 7_000).to_string()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(q::<i64>(&mut c, &["PTTL", "k"]).await.unwrap(), 7_000);
    for (args, text) in [
        (
            &["EXPIRE", "k", "1", "NX", "XX"][..],
            "NX and XX, GT or LT options at the same time are not compatible",
        ),
        (
            &["EXPIRE", "k", "1", "GT", "LT"],
            "GT and LT options at the same time are not compatible",
        ),
        (&["EXPIRE", "k", "1", "YY"], "Unsupported option YY"),
        (
            &["EXPIRE", "k", "x"],
            "value is not an integer or out of range",
        ),
        (
            &["EXPIRE", "k", "9223372036854775807"],
            "invalid expire time in 'expire' command",
        ),
        (
            &["PEXPIRE", "k", "9223372036854775807"],
            "invalid expire time in 'pexpire' command",
        ),
    ] {
        let e = error(&mut c, args).await;
        assert!(e.contains(text), "{args:?}: {e}");
    }
    assert_eq!(
        q::<i64>(&mut c, &["PTTL", "k"]).await.unwrap(),
        7_000,
        "unchanged"
    );
    // PERSIST, then a time in the past deletes.
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]).await.unwrap(), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "-1"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]).await.unwrap(), 0);
    // TYPE and TOUCH see only live keys; INCR and APPEND keep the expiry.
    let _: () = q(&mut c, &["SET", "n", "1", "PX", "100"]).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]).await.unwrap(), 2);
    assert_eq!(q::<i64>(&mut c, &["APPEND", "n", "0"]).await.unwrap(), 2);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "n"]).await.unwrap(), 100);
    assert_eq!(q::<String>(&mut c, &["TYPE", "n"]).await.unwrap(), "string");
    assert_eq!(
        q::<i64>(&mut c, &["TOUCH", "n", "n", "nope"])
            .await
            .unwrap(),
        2
    );
    clock.advance(101);
    assert_eq!(q::<String>(&mut c, &["TYPE", "n"]).await.unwrap(), "none");
    assert_eq!(q::<i64>(&mut c, &["TOUCH", "n"]).await.unwrap(), 0);
    server.stop().await;
}

#[tokio::test]
async fn expired_keys_are_reclaimed_in_the_background() {
    let (server, clock) = server_with_clock().await;
    let mut c = server.client().await;
    for i in 0..100 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), "v", "PX", "10"])
            .await
            .unwrap();
    }
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 100);
    clock.advance(11);
    // Nobody reads the keys: the 10 Hz cycle deletes them.
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    while q::<i64>(&mut c, &["DBSIZE"]).await.unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "never reclaimed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let info: String = q(&mut c, &["INFO", "stats"]).await.unwrap();
    assert!(info.contains("expired_keys:100\r\n"), "{info}");
    server.stop().await;
}
