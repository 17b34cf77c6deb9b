//! RESP3: `HELLO 3` switches a connection, and each reply takes the shape
//! Redis 7 sends in each protocol. Byte-level on a raw stream, and through
//! the `redis` crate speaking RESP2 and RESP3.

use redis::{ProtocolVersion, Value};
use ringkv_server::ServerConfig;

use crate::client::q;
use crate::common::{PATIENCE, TestServer, exchange, resp, start};

#[tokio::test]
async fn hello_3_switches_the_connection_and_replies_with_a_map() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    exchange(&mut s, &resp(&[b"GET", b"nope"]), b"$-1\r\n").await;
    let id = 1; // the server's first connection
    let version = "7.2.0";
    let hello = format!(
        "%7\r\n$6\r\nserver\r\n$6\r\nringkv\r\n$7\r\nversion\r\n${}\r\n{version}\r\n\
         $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        version.len()
    );
    exchange(&mut s, &resp(&[b"HELLO", b"3"]), hello.as_bytes()).await;
    // Nulls are `_`; strings and integers are as in RESP2.
    exchange(&mut s, &resp(&[b"GET", b"nope"]), b"_\r\n").await;
    exchange(&mut s, &resp(&[b"SET", b"k", b"v"]), b"+OK\r\n").await;
    exchange(
        &mut s,
        &resp(&[b"MGET", b"k", b"nope"]),
        b"*2\r\n$1\r\nv\r\n_\r\n",
    )
    .await;
    // CONFIG GET is a map.
    exchange(
        &mut s,
        &resp(&[b"CONFIG", b"GET", b"databases"]),
        b"%1\r\n$9\r\ndatabases\r\n$1\r\n1\r\n",
    )
    .await;
    // HELLO without a version keeps the protocol; HELLO 2 goes back.
    s.write_all_resp(&[b"HELLO"]).await;
    let reply = s.read_some().await;
    assert!(reply.starts_with(b"%7\r\n"), "{}", reply.escape_ascii());
    let reply_rest = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply_rest.contains("$5\r\nproto\r\n:3\r\n"), "{reply_rest}");
    s.write_all_resp(&[b"HELLO", b"2"]).await;
    let reply = s.read_some().await;
    assert!(reply.starts_with(b"*14\r\n"), "{}", reply.escape_ascii());
    exchange(&mut s, &resp(&[b"GET", b"nope"]), b"$-1\r\n").await;
    // A version out of range changes nothing.
    exchange(
        &mut s,
        &resp(&[b"HELLO", b"4"]),
        b"-NOPROTO unsupported protocol version\r\n",
    )
    .await;
    exchange(
        &mut s,
        &resp(&[b"HELLO", b"x"]),
        b"-ERR Protocol version is not an integer or out of range\r\n",
    )
    .await;
    exchange(&mut s, &resp(&[b"GET", b"nope"]), b"$-1\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn info_and_client_info_are_verbatim_strings_in_resp3() {
    let server = start(ServerConfig::default()).await;
    let mut s = server.raw().await;
    s.write_all_resp(&[b"HELLO", b"3"]).await;
    s.read_some().await;
    s.write_all_resp(&[b"INFO", b"keyspace"]).await;
    let reply = s.read_some().await;
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(text.starts_with('='), "{text}");
    assert!(text.contains("\r\ntxt:# Keyspace\r\n"), "{text}");
    let declared: usize = text[1..text.find('\r').expect("a header")]
        .parse()
        .expect("a length");
    assert_eq!(
        declared + text.find('\n').expect("a header") + 3,
        text.len()
    );
    s.write_all_resp(&[b"CLIENT", b"INFO"]).await;
    let text = String::from_utf8_lossy(&s.read_some().await).into_owned();
    assert!(text.starts_with('=') && text.contains("txt:id="), "{text}");
    assert!(text.contains(" resp=3"), "{text}");
    server.stop().await;
}

async fn client(
    server: &TestServer,
    protocol: ProtocolVersion,
) -> redis::aio::MultiplexedConnection {
    let suffix = match protocol {
        ProtocolVersion::RESP2 => "?protocol=resp2",
        _ => "?protocol=resp3",
    };
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(PATIENCE));
    redis::Client::open(format!("{}{suffix}", server.url()))
        .expect("url")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect")
}

#[tokio::test]
async fn the_redis_crate_works_in_both_protocols() {
    let server = start(ServerConfig::default()).await;
    for protocol in [ProtocolVersion::RESP2, ProtocolVersion::RESP3] {
        let mut c = client(&server, protocol).await;
        let _: () = q(&mut c, &["SET", "a", "1"]).await.unwrap();
        assert_eq!(q::<i64>(&mut c, &["INCR", "a"]).await.unwrap(), 2);
        let missing: Value = q(&mut c, &["GET", "missing"]).await.unwrap();
        assert_eq!(missing, Value::Nil, "{protocol:?}");
        let config: Value = q(&mut c, &["CONFIG", "GET", "databases"]).await.unwrap();
        let hello: Value = q(&mut c, &["HELLO"]).await.unwrap();
        let info: Value = q(&mut c, &["INFO", "server"]).await.unwrap();
        match protocol {
            ProtocolVersion::RESP2 => {
                assert!(
                    matches!(config, Value::Array(ref v) if v.len() == 2),
                    "{config:?}"
                );
                assert!(
                    matches!(hello, Value::Array(ref v) if v.len() == 14),
                    "{hello:?}"
                );
                assert!(matches!(info, Value::BulkString(_)), "{info:?}");
            }
            _ => {
                assert_eq!(
                    config,
                    Value::Map(vec![(
                        Value::BulkString(b"databases".to_vec()),
                        Value::BulkString(b"1".to_vec())
                    )])
                );
                let Value::Map(pairs) = hello else {
                    panic!("{hello:?}")
                };
                assert!(pairs.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
                assert!(matches!(info, Value::VerbatimString { .. }), "{info:?}");
            }
        }
        // Typed conversions do not care about the shape.
        let info: String = q(&mut c, &["INFO", "server"]).await.unwrap();
        assert!(info.starts_with("# Server\r\n"), "{info}");
        let docs: std::collections::HashMap<String, Value> =
            q(&mut c, &["COMMAND", "DOCS", "get"]).await.unwrap();
        assert!(docs.contains_key("get"), "{docs:?}");
    }
    server.stop().await;
}

/// Helpers for raw streams whose replies' lengths are not known upfront.
trait RawExt {
    async fn write_all_resp(&mut self, args: &[&[u8]]);
    /// Whatever arrives within a short wait after the first bytes.
    async fn read_some(&mut self) -> Vec<u8>;
}

impl RawExt for tokio::net::TcpStream {
    async fn write_all_resp(&mut self, args: &[&[u8]]) {
        use tokio::io::AsyncWriteExt;
        self.write_all(&resp(args)).await.expect("write");
    }

    async fn read_some(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut out = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.read(&mut out))
            .await
            .expect("a reply in time")
            .expect("read");
        out.truncate(n);
        // The reply of a small command goes out in one write: give the rest
        // a moment in case the kernel split it anyway.
        let mut more = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), self.read(&mut more)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&more[..n]);
        }
        out
    }
}
