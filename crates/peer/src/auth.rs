//! The cluster secret and the handshake that proves it.
//!
//! Both ends prove they hold the secret without sending it, and neither
//! can replay an old handshake: the server sends a fresh 32-byte nonce,
//! the client answers with its own nonce and
//! `HMAC-SHA256(secret, "ringkv-peer client" || server nonce || client
//! nonce)`, the server checks it (in constant time) and answers with
//! `HMAC-SHA256(secret, "ringkv-peer server" || client nonce || server
//! nonce)`, which the client checks. Every message has a fixed size, so a
//! stranger cannot make a node buffer anything before it is trusted.
//!
//! The handshake also gives each end the keys of the records that carry
//! every byte after it ([`crate::records`]): `HMAC-SHA256(secret,
//! "ringkv-peer to server" || server nonce || client nonce)` for what the
//! client sends, the same with "ringkv-peer to client" for what the server
//! sends. Someone who relays a genuine handshake and then changes or
//! injects bytes breaks the connection instead. Without a secret (a
//! loopback-only cluster) there are no keys and the bytes go as they are.
//! Nothing is encrypted: secrecy needs a private network or a tunnel.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::records::Keys;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of each nonce and each proof.
const NONCE: usize = 32;
const PROOF: usize = 32;
/// The first bytes on a peer connection, both ways: a peer port spoken to
/// by something else (a Redis client, a scanner) fails at once.
/// (`RKVPEER1` was the protocol before records had MACs.)
const MAGIC: &[u8; 8] = b"RKVPEER2";

/// The shared cluster secret (`--cluster-secret`). Empty means none: only
/// allowed when every address is loopback ([`check_secret`]).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed.
        f.write_str(if self.0.is_empty() {
            "Secret(none)"
        } else {
            "Secret(..)"
        })
    }
}

impl Secret {
    /// The secret `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// No secret: for loopback-only clusters and tests.
    pub fn none() -> Secret {
        Secret(Vec::new())
    }

    /// Whether there is no secret.
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    fn mac(&self, label: &[u8], a: &[u8], b: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(a);
        mac.update(b);
        mac
    }

    /// The record keys of a connection whose handshake used these nonces,
    /// as the server (`server` true) or the client sees them; none
    /// without a secret.
    fn keys(&self, server_nonce: &[u8], client_nonce: &[u8], server: bool) -> Option<Keys> {
        if self.is_none() {
            return None;
        }
        let key = |label: &[u8]| {
            let derived = self
                .mac(label, server_nonce, client_nonce)
                .finalize()
                .into_bytes();
            HmacSha256::new_from_slice(&derived).expect("HMAC takes any key length")
        };
        let (to_server, to_client) = (key(b"ringkv-peer to server"), key(b"ringkv-peer to client"));
        Some(if server {
            Keys {
                send: to_client,
                recv: to_server,
            }
        } else {
            Keys {
                send: to_server,
                recv: to_client,
            }
        })
    }
}

/// Why a node may not start with its peer address and secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--peer-listen {addr} is not a loopback address, so peers must authenticate: give every node the same --cluster-secret (at least 16 bytes)"
)]
pub struct SecretError {
    /// The address.
    pub addr: SocketAddr,
}

/// Refuses a node that would accept peers from other hosts without a
/// secret (or with one too short to resist guessing).
pub fn check_secret(addr: SocketAddr, secret: &Secret) -> Result<(), SecretError> {
    if addr.ip().is_loopback() || secret.0.len() >= 16 {
        Ok(())
    } else {
        Err(SecretError { addr })
    }
}

/// The handshake failed: what went wrong, for the log and the caller.
#[derive(Debug)]
pub(crate) enum Handshake {
    /// The other end's proof was wrong: it does not hold our secret.
    BadProof,
    /// Not a ringkv peer, or a broken or slow connection.
    Io(std::io::Error),
}

impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handshake::BadProof => f.write_str("the other end does not hold the cluster secret"),
            Handshake::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<std::io::Error> for Handshake {
    fn from(e: std::io::Error) -> Self {
        Handshake::Io(e)
    }
}

async fn read_magic<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(), Handshake> {
    let mut magic = [0u8; MAGIC.len()];
    stream.read_exact(&mut magic).await?;
    if &magic == b"RKVPEER1" {
        return Err(Handshake::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the other end speaks an older peer protocol (RKVPEER1): run the same ringkv version on every node",
        )));
    }
    if &magic != MAGIC {
        return Err(Handshake::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a ringkv peer connection",
        )));
    }
    Ok(())
}

/// The server's side: challenge, check, prove; the record keys.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
) -> Result<Option<Keys>, Handshake> {
    let server_nonce: [u8; NONCE] = rand::random();
    let mut hello = Vec::with_capacity(MAGIC.len() + NONCE);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&server_nonce);
    stream.write_all(&hello).await?;
    read_magic(stream).await?;
    let mut answer = [0u8; NONCE + PROOF];
    stream.read_exact(&mut answer).await?;
    let (client_nonce, proof) = answer.split_at(NONCE);
    secret
        .mac(b"ringkv-peer client", &server_nonce, client_nonce)
        .verify_slice(proof)
        .map_err(|_| Handshake::BadProof)?;
    let mine = secret
        .mac(b"ringkv-peer server", client_nonce, &server_nonce)
        .finalize()
        .into_bytes();
    stream.write_all(&mine).await?;
    Ok(secret.keys(&server_nonce, client_nonce, true))
}

/// The client's side: answer the challenge, check the server's proof;
/// the record keys.
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
) -> Result<Option<Keys>, Handshake> {
    read_magic(stream).await?;
    let mut server_nonce = [0u8; NONCE];
    stream.read_exact(&mut server_nonce).await?;
    let client_nonce: [u8; NONCE] = rand::random();
    let proof = secret
        .mac(b"ringkv-peer client", &server_nonce, &client_nonce)
        .finalize()
        .into_bytes();
    let mut answer = Vec::with_capacity(MAGIC.len() + NONCE + PROOF);
    answer.extend_from_slice(MAGIC);
    answer.extend_from_slice(&client_nonce);
    answer.extend_from_slice(&proof);
    stream.write_all(&answer).await?;
    let mut theirs = [0u8; PROOF];
    match stream.read_exact(&mut theirs).await {
        Ok(_) => {}
        // The server closes without a word when our proof is wrong.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Handshake::BadProof);
        }
        Err(e) => return Err(e.into()),
    }
    secret
        .mac(b"ringkv-peer server", &client_nonce, &server_nonce)
        .verify_slice(&theirs)
        .map_err(|_| Handshake::BadProof)?;
    Ok(secret.keys(&server_nonce, &client_nonce, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordStream;

    async fn shake(
        server: &Secret,
        client: &Secret,
    ) -> (
        Result<Option<Keys>, Handshake>,
        Result<Option<Keys>, Handshake>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (s, c) = tokio::join!(
            async {
                let r = accept(&mut a, server).await;
                drop(a); // as the server does on failure
                r
            },
            connect(&mut b, client)
        );
        (s, c)
    }

    #[tokio::test]
    async fn the_same_secret_passes_a_different_one_fails_both_ways() {
        let (s, c) = shake(
            &Secret::new("0123456789abcdef"),
            &Secret::new("0123456789abcdef"),
        )
        .await;
        assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");
        let (s, c) = shake(
            &Secret::new("0123456789abcdef"),
            &Secret::new("0123456789abcdeX"),
        )
        .await;
        assert!(matches!(s, Err(Handshake::BadProof)), "{s:?}");
        assert!(matches!(c, Err(Handshake::BadProof)), "{c:?}");
        let (s, _) = shake(&Secret::new("0123456789abcdef"), &Secret::none()).await;
        assert!(matches!(s, Err(Handshake::BadProof)), "{s:?}");
    }

    /// The record keys a handshake gives the server and the client.
    async fn handshake(secret: &Secret) -> (Option<Keys>, Option<Keys>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (s, c) = tokio::join!(accept(&mut a, secret), connect(&mut b, secret));
        (s.unwrap(), c.unwrap())
    }

    /// The bytes on the wire when an end with `keys` sends `payload`.
    async fn sealed(keys: Option<Keys>, payload: &[u8]) -> Vec<u8> {
        let (a, mut wire) = tokio::io::duplex(1 << 16);
        let mut sender = RecordStream::new(a, keys);
        sender.write_all(payload).await.unwrap();
        sender.shutdown().await.unwrap();
        drop(sender);
        let mut bytes = Vec::new();
        wire.read_to_end(&mut bytes).await.unwrap();
        bytes
    }

    /// What an end with `keys` reads from `wire`.
    async fn opened(keys: Option<Keys>, wire: &[u8]) -> std::io::Result<Vec<u8>> {
        let (mut feed, b) = tokio::io::duplex(1 << 16);
        feed.write_all(wire).await.unwrap();
        drop(feed);
        let mut receiver = RecordStream::new(b, keys);
        let mut got = Vec::new();
        receiver.read_to_end(&mut got).await.map(|_| got)
    }

    #[tokio::test]
    async fn the_handshake_keys_records_per_connection_and_direction() {
        let secret = Secret::new("0123456789abcdef");
        let (server, client) = handshake(&secret).await;
        let (server, client) = (server.unwrap(), client.unwrap());
        let (server2, client2) = handshake(&secret).await;
        let again = |k: &Keys| Keys {
            send: k.send.clone(),
            recv: k.recv.clone(),
        };
        let wire = sealed(Some(again(&client)), b"to the server").await;
        // Not encrypted: the payload between a length and a tag.
        assert_eq!(wire.len(), 4 + 13 + 16);
        assert_eq!(&wire[4..17], b"to the server");
        // The other end of the same connection reads it...
        assert_eq!(
            opened(Some(again(&server)), &wire).await.unwrap(),
            b"to the server"
        );
        // ... the sender itself does not (a reflection: each direction has
        // its own key), nor does either end of another connection with the
        // same secret (recorded bytes cannot be replayed into it).
        for (who, keys) in [
            ("the sender", Some(again(&client))),
            ("another server", server2),
            ("another client", client2),
        ] {
            let err = opened(keys, &wire).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{who}: {err}");
        }
        // The server's records go the other way: the client reads them,
        // the server itself does not.
        let back = sealed(Some(again(&server)), b"to the client").await;
        assert_eq!(opened(Some(client), &back).await.unwrap(), b"to the client");
        assert!(opened(Some(server), &back).await.is_err());
        // Without a secret: no keys, plain bytes.
        let (s, c) = handshake(&Secret::none()).await;
        assert!(s.is_none() && c.is_none());
        assert_eq!(sealed(None, b"plain").await, b"plain");
    }

    #[test]
    fn a_non_loopback_address_needs_a_secret_of_16_bytes() {
        let lan: SocketAddr = "10.0.0.5:7000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert!(check_secret(local, &Secret::none()).is_ok());
        let err = check_secret(lan, &Secret::none()).unwrap_err();
        assert!(err.to_string().contains("--cluster-secret"), "{err}");
        assert!(check_secret(lan, &Secret::new("short")).is_err());
        assert!(check_secret(lan, &Secret::new("0123456789abcdef")).is_ok());
        assert_eq!(format!("{:?}", Secret::new("hidden")), "Secret(..)");
    }
}
