//! APPEND, GETDEL, GETSET, SETNX, SETRANGE, GETRANGE/SUBSTR, INCRBYFLOAT:
//! Redis's replies and error texts, and a refused request changes nothing.

use redis::Value;
use ringkv_server::ServerConfig;

use crate::client::{error, q};
use crate::common::start;

#[tokio::test]
async fn read_modify_write_string_commands() {
    let server = start(ServerConfig {
        max_bulk_len: 1000,
        ..ServerConfig::default()
    })
    .await;
    let mut c = server.client().await;
    assert_eq!(
        q::<i64>(&mut c, &["APPEND", "s", "Hello"]).await.unwrap(),
        5
    );
    assert_eq!(
        q::<i64>(&mut c, &["APPEND", "s", " World"]).await.unwrap(),
        11
    );
    assert_eq!(
        q::<String>(&mut c, &["GETRANGE", "s", "-5", "-1"])
            .await
            .unwrap(),
        "World"
    );
    assert_eq!(
        q::<String>(&mut c, &["SUBSTR", "s", "0", "4"])
            .await
            .unwrap(),
        "Hello"
    );
    assert_eq!(
        q::<String>(&mut c, &["GETRANGE", "nope", "0", "-1"])
            .await
            .unwrap(),
        ""
    );
    assert!(
        error(&mut c, &["GETRANGE", "s", "a", "1"])
            .await
            .contains("not an integer")
    );
    // SETRANGE pads with zero bytes; an empty patch creates nothing.
    assert_eq!(
        q::<i64>(&mut c, &["SETRANGE", "r", "3", "ab"])
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        q::<Vec<u8>>(&mut c, &["GET", "r"]).await.unwrap(),
        b"\0\0\0ab"
    );
    assert_eq!(
        q::<i64>(&mut c, &["SETRANGE", "s", "6", "Redis"])
            .await
            .unwrap(),
        11
    );
    assert_eq!(
        q::<String>(&mut c, &["GET", "s"]).await.unwrap(),
        "Hello Redis"
    );
    assert_eq!(
        q::<i64>(&mut c, &["SETRANGE", "empty", "0", ""])
            .await
            .unwrap(),
        0
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "empty"]).await.unwrap(), 0);
    assert!(
        error(&mut c, &["SETRANGE", "s", "-1", "x"])
            .await
            .contains("offset is out of range")
    );
    // Past proto-max-bulk-len (1000 here): refused, nothing written.
    let e = error(&mut c, &["SETRANGE", "s", "995", "0123456789"]).await;
    assert!(
        e.contains("string exceeds maximum allowed size (proto-max-bulk-len)"),
        "{e}"
    );
    let e = error(&mut c, &["APPEND", "s", &"x".repeat(990)]).await;
    assert!(e.contains("string exceeds maximum allowed size"), "{e}");
    assert_eq!(
        q::<String>(&mut c, &["GET", "s"]).await.unwrap(),
        "Hello Redis"
    );
    // SETNX, GETSET, GETDEL.
    assert_eq!(q::<i64>(&mut c, &["SETNX", "n", "1"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "n", "2"]).await.unwrap(), 0);
    assert_eq!(
        q::<String>(&mut c, &["GETSET", "n", "3"]).await.unwrap(),
        "1"
    );
    assert_eq!(
        q::<Value>(&mut c, &["GETSET", "fresh", "x"]).await.unwrap(),
        Value::Nil
    );
    assert_eq!(q::<String>(&mut c, &["GETDEL", "n"]).await.unwrap(), "3");
    assert_eq!(
        q::<Value>(&mut c, &["GETDEL", "n"]).await.unwrap(),
        Value::Nil
    );
    // INCRBYFLOAT.
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "f", "10.5"])
            .await
            .unwrap(),
        "10.5"
    );
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "f", "0.1"])
            .await
            .unwrap(),
        "10.6"
    );
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "f", "-5e3"])
            .await
            .unwrap(),
        "-4989.4"
    );
    assert!(
        error(&mut c, &["INCRBYFLOAT", "f", "x"])
            .await
            .contains("value is not a valid float")
    );
    assert!(
        error(&mut c, &["INCRBYFLOAT", "f", " 1"])
            .await
            .contains("value is not a valid float")
    );
    let e = error(&mut c, &["INCRBYFLOAT", "f", "+inf"]).await;
    assert!(e.contains("increment would produce NaN or Infinity"), "{e}");
    assert!(
        error(&mut c, &["INCRBYFLOAT", "s", "1"])
            .await
            .contains("value is not a valid float")
    );
    assert_eq!(q::<String>(&mut c, &["GET", "f"]).await.unwrap(), "-4989.4");
    server.stop().await;
}
