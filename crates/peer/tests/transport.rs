//! The peer transport over TCP on loopback and in memory: calls, reuse,
//! the secret, the frame limit, deadlines, and hostile connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ringkv_peer::{
    BoxFuture, Limits, MemTransport, PeerHandler, PeerServer, PeerTransport, Secret, Service,
    TcpTransport, TransportError, serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers `RaftVote` with the body reversed, sleeps the number of
/// milliseconds in the body's first byte first (`RaftSnapshot`), answers
/// `Status` with as many KiB as the body's first byte, refuses
/// `RaftAppend`; counts calls.
#[derive(Default)]
struct Echo {
    calls: AtomicUsize,
}

impl PeerHandler for Echo {
    fn handle(
        &self,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match service {
                Service::RaftVote => Ok(body.into_iter().rev().collect()),
                Service::RaftSnapshot => {
                    let ms = u64::from(body.first().copied().unwrap_or(0)) * 10;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(body)
                }
                Service::Status => Ok(vec![7; usize::from(body[0]) << 10]),
                _ => Err("append refused by the test".into()),
            }
        })
    }
}

const SECRET: &str = "a cluster secret of some length";

async fn server(limits: Limits) -> (PeerServer, Arc<Echo>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = Arc::new(Echo::default());
    let server = serve(listener, Secret::new(SECRET), echo.clone(), limits).unwrap();
    let addr = server.local_addr().to_string();
    (server, echo, addr)
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn calls_answer_and_reuse_one_authenticated_connection() {
    let (_server, echo, addr) = server(Limits::default()).await;
    let client = TcpTransport::new(Secret::new(SECRET), Limits::default());
    for i in 0..20u8 {
        let answer = client
            .call(&addr, Service::RaftVote, vec![1, 2, i], SECOND)
            .await
            .unwrap();
        assert_eq!(answer, vec![i, 2, 1]);
    }
    // Concurrent calls share the connection too.
    let calls = (0..50u8).map(|i| client.call(&addr, Service::RaftVote, vec![i], SECOND));
    for (i, answer) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap(), vec![i as u8]);
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 70);
    let refused = client
        .call(&addr, Service::RaftAppend, vec![], SECOND)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, TransportError::Refused { why, .. } if why == "append refused by the test"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_secret_is_refused_before_any_call() {
    let (_server, echo, addr) = server(Limits::default()).await;
    for secret in [Secret::new("another secret of some length"), Secret::none()] {
        let client = TcpTransport::new(secret, Limits::default());
        let err = client
            .call(&addr, Service::RaftVote, vec![1], SECOND)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Auth { .. }), "{err}");
        assert!(err.to_string().contains("--cluster-secret"), "{err}");
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 0, "no call got through");
    // A server with another secret is refused by the client, too.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = serve(
        listener,
        Secret::new("another secret of some length"),
        echo.clone(),
        Limits::default(),
    )
    .unwrap();
    let client = TcpTransport::new(Secret::new(SECRET), Limits::default());
    let err = client
        .call(
            &other.local_addr().to_string(),
            Service::RaftVote,
            vec![1],
            SECOND,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Auth { .. }), "{err}");
    // The right secret still works.
    client
        .call(&addr, Service::RaftVote, vec![1], SECOND)
        .await
        .unwrap();
}

/// A man in the middle: relays one connection to `server` verbatim,
/// except that past the client's handshake (72 bytes: magic, nonce,
/// proof) it flips the lowest bit of the first `a` the client sends.
async fn tampering_relay(server: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(server).await.unwrap();
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        });
        let (mut seen, mut flipped) = (0usize, false);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for (i, byte) in buf[..n].iter_mut().enumerate() {
                if !flipped && seen + i >= 72 && *byte == b'a' {
                    *byte ^= 1;
                    flipped = true;
                }
            }
            seen += n;
            if to_server.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    addr
}

#[tokio::test]
async fn bytes_changed_after_a_genuine_handshake_break_the_connection() {
    let (_server, echo, addr) = server(Limits::default()).await;
    let relay = tampering_relay(addr.clone()).await;
    let client = TcpTransport::new(Secret::new(SECRET), Limits::default());
    let body = vec![b'a'; 64];
    // The handshake passes (relayed as it is); the request's body is
    // changed on its way, so the server refuses the record and closes:
    // the call fails, and the handler never sees it. (Before records had
    // MACs, it answered the changed body.)
    let result = client
        .call(&relay, Service::RaftVote, body.clone(), SECOND)
        .await;
    match &result {
        Err(TransportError::Lost { .. }) => {}
        other => panic!("a changed request was not refused: {other:?}"),
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 0, "the handler saw it");
    // Straight to the server, the same call is answered.
    let answer = client
        .call(&addr, Service::RaftVote, body, SECOND)
        .await
        .unwrap();
    assert_eq!(answer, vec![b'a'; 64]);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_connection_serves_on() {
    let (_server, _echo, addr) = server(Limits::default()).await;
    let client = TcpTransport::new(Secret::new(SECRET), Limits::default());
    let err = client
        .call(
            &addr,
            Service::RaftSnapshot,
            vec![50],
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    let answer = client
        .call(&addr, Service::RaftSnapshot, vec![0, 9], SECOND)
        .await
        .unwrap();
    assert_eq!(answer, vec![0, 9]);
}

#[tokio::test]
async fn frames_over_the_limit_are_refused_on_both_sides() {
    let small = Limits {
        frame: 64 << 10,
        ..Limits::default()
    };
    let (_server, echo, addr) = server(small).await;
    // The client knows the limit: nothing is sent.
    let client = TcpTransport::new(Secret::new(SECRET), small);
    let err = client
        .call(&addr, Service::RaftVote, vec![0; 100 << 10], SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { .. }), "{err}");
    // A client with a larger limit sends it: the server drops the
    // connection without reading the frame, and serves the next one.
    let big = TcpTransport::new(Secret::new(SECRET), Limits::default());
    let err = big
        .call(&addr, Service::RaftVote, vec![0; 1 << 20], SECOND)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Lost { .. } | TransportError::Timeout { .. }
        ),
        "{err}"
    );
    assert_eq!(echo.calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        big.call(&addr, Service::RaftVote, vec![1, 2], SECOND)
            .await
            .unwrap(),
        vec![2, 1],
        "the next call reconnects"
    );
    // An answer over the server's limit is refused at once, with its
    // size, not left for the caller's deadline; the connection serves on.
    let started = std::time::Instant::now();
    let err = big
        .call(&addr, Service::Status, vec![100], Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Refused { why, .. } if why.contains("102400 bytes")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        big.call(&addr, Service::Status, vec![1], SECOND)
            .await
            .unwrap()
            .len(),
        1024
    );
}

#[tokio::test]
async fn strangers_are_closed_without_hurting_the_server() {
    let limits = Limits {
        handshake: Duration::from_millis(200),
        handshakes: 8,
        connections: 4,
        ..Limits::default()
    };
    let (_server, echo, addr) = server(limits).await;
    // A peer connected before the strangers come.
    let early = TcpTransport::new(Secret::new(SECRET), Limits::default());
    assert_eq!(
        early
            .call(&addr, Service::RaftVote, vec![7], SECOND)
            .await
            .unwrap(),
        vec![7]
    );
    // A client speaking another protocol gets the challenge, then is closed.
    let mut junk = TcpStream::connect(&addr).await.unwrap();
    junk.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    assert_eq!(
        read_until_closed(&mut junk).await,
        8 + 32,
        "only the challenge was sent"
    );
    // 50 silent strangers: 8 are in their handshake, the rest are closed
    // at once without a byte; all of them within the handshake limit.
    let mut strangers = Vec::new();
    for _ in 0..50 {
        strangers.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut challenged = 0;
    for s in &mut strangers {
        match read_until_closed(s).await {
            0 => {}
            40 => challenged += 1,
            n => panic!("a stranger got {n} bytes"),
        }
    }
    assert!(challenged <= 8, "{challenged} strangers held a handshake");
    // The peer connected before them was served throughout; a new one can
    // connect once they are gone.
    assert_eq!(
        early
            .call(&addr, Service::RaftVote, vec![8], SECOND)
            .await
            .unwrap(),
        vec![8]
    );
    let late = TcpTransport::new(Secret::new(SECRET), Limits::default());
    assert_eq!(
        late.call(&addr, Service::RaftVote, vec![9], SECOND)
            .await
            .unwrap(),
        vec![9]
    );
    // Authenticated connections are bounded too: 4 slots, two taken.
    let more: Vec<TcpTransport> = (0..3)
        .map(|_| TcpTransport::new(Secret::new(SECRET), Limits::default()))
        .collect();
    let mut refused = 0;
    for t in &more {
        if t.call(&addr, Service::RaftVote, vec![1], SECOND)
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 1, "the fifth authenticated connection is closed");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 5);
}

/// Reads until the server closes the connection (at most 1 s); returns
/// how many bytes came.
async fn read_until_closed(stream: &mut TcpStream) -> usize {
    let mut buf = vec![0u8; 4096];
    let mut seen = 0;
    loop {
        match tokio::time::timeout(SECOND, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen += n,
            Err(_) => panic!("a stranger's connection stayed open"),
        }
    }
}

/// Strangers on one host hold at most `handshakes_per_source` handshakes,
/// so a peer on another host gets in while they flood (on loopback, the
/// strangers connect from 127.0.0.2 and the peer from 127.0.0.1).
#[tokio::test]
async fn strangers_on_one_host_leave_room_for_peers_on_others() {
    let limits = Limits {
        handshake: Duration::from_secs(5),
        handshakes: 16,
        handshakes_per_source: 4,
        ..Limits::default()
    };
    let (_server, _echo, addr) = server(limits).await;
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let mut strangers = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        strangers.push(socket.connect(target).await.unwrap());
    }
    // Held ones got the challenge and wait; the others were closed.
    let mut held = 0;
    for s in &mut strangers {
        let mut buf = [0u8; 64];
        let mut got = 0;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got += n,
                Err(_) => {
                    held += 1;
                    break;
                }
            }
        }
        assert!(got == 0 || got == 40, "a stranger got {got} bytes");
    }
    assert_eq!(held, 4, "handshakes held from one address");
    let peer = TcpTransport::new(Secret::new(SECRET), Limits::default());
    assert_eq!(
        peer.call(&addr, Service::RaftVote, vec![4], SECOND)
            .await
            .unwrap(),
        vec![4],
        "a peer on another address gets in during the flood"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let client = TcpTransport::new(Secret::new(SECRET), Limits::default());
    let err = client
        .call(&addr, Service::RaftVote, vec![], SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn in_memory_links_cut_and_heal_and_frames_are_limited() {
    let net = MemTransport::new(1024);
    let echo = Arc::new(Echo::default());
    net.register("b", echo.clone());
    let a = net.node("a");
    assert_eq!(
        a.call("b", Service::RaftVote, vec![1, 2], SECOND)
            .await
            .unwrap(),
        vec![2, 1]
    );
    net.cut("b", "a");
    let err = a
        .call("b", Service::RaftVote, vec![1], SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    net.heal();
    let err = a
        .call("b", Service::RaftVote, vec![0; 2048], SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { .. }), "{err}");
    let err = a
        .call(
            "b",
            Service::RaftSnapshot,
            vec![20],
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    net.unregister("b");
    let err = a
        .call("b", Service::RaftVote, vec![1], SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
}

/// A crashed process answers none of the calls it was serving: an
/// in-memory peer unregistered mid-call ends the call at once (the caller
/// does not wait out its time limit) and its handler stops.
#[tokio::test(start_paused = true)]
async fn in_memory_calls_in_flight_end_when_their_peer_is_unregistered() {
    let net = MemTransport::new(1024);
    net.register("b", Arc::new(Echo::default()));
    let a = net.node("a");
    let started = tokio::time::Instant::now();
    // The handler sleeps 2.5 s; the peer goes away after 100 ms.
    let call = a.call(
        "b",
        Service::RaftSnapshot,
        vec![250],
        Duration::from_secs(60),
    );
    let crash = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        net.unregister("b");
    };
    let (answer, ()) = tokio::join!(call, crash);
    let err = answer.unwrap_err();
    assert!(matches!(err, TransportError::Lost { .. }), "{err}");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

/// Calls that find no connection to a peer wait for one of them to make it:
/// fifty concurrent first calls open one connection, which a peer that
/// admits a single one serves (each dialling its own was refused past the
/// peer's handshake budget).
#[tokio::test]
async fn concurrent_first_calls_share_one_new_connection() {
    let limits = Limits {
        connections: 1,
        ..Limits::default()
    };
    let (_server, echo, addr) = server(limits).await;
    let client = TcpTransport::new(Secret::new(SECRET), Limits::default());
    let calls = (0..50u8).map(|i| client.call(&addr, Service::RaftVote, vec![i], SECOND));
    for (i, answer) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap(), vec![i as u8], "call {i}");
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 50);
}
