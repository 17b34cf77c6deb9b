//! `ringkv serve`: a [`Cluster`](ringkv_cluster::Cluster) behind the Redis
//! protocol (RESP2 and RESP3), so `redis-cli`, `redis-benchmark` and Redis client
//! libraries work against it unchanged.
//!
//! The modules follow a request: [`server`] accepts connections and
//! shuts down, `handler` runs one connection's loop under its limits,
//! `connection` buffers a client's bytes, `request` turns them into
//! arguments (RESP arrays walked header by header as Redis does, or inline
//! commands), `cmd` looks the command up in one table and runs it against
//! the cluster, `reply` builds the answer as a `frame`, which is encoded
//! in the protocol the connection chose with `HELLO`. `glob` matches Redis patterns. The command
//! layer only sees the `Cluster` API, not where the nodes live.
//!
//! Commands, replies and limits are listed in the crate's `README.md`.
//!
//! ```
//! use std::sync::Arc;
//! use ringkv_cluster::Cluster;
//! use ringkv_server::{ServerConfig, run};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cluster = Arc::new(Cluster::default());
//! cluster.add_node("node1")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(run(listener, cluster, ServerConfig::default(), stopped));
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nGET k\r\n").await?;
//! let mut reply = [0u8; 12];
//! client.read_exact(&mut reply).await?;
//! assert_eq!(&reply, b"+OK\r\n$1\r\nv\r\n");
//!
//! stop.send(()).unwrap();
//! let summary = server.await??;
//! assert_eq!(summary.commands, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod clients;
mod cmd;
mod config;
mod connection;
mod error;
mod fdlimit;
mod frame;
mod glob;
mod handler;
mod listener;
mod reply;
mod request;
pub mod route;
pub mod server;
mod sets;
pub mod shutdown;
mod state;

pub use config::{MAX_CLIENTS_LIMIT, ServerConfig};
pub use error::ServerError;
pub use listener::{ClientStream, Connector, Listener};
pub use server::{Summary, run, run_routed, run_until};
