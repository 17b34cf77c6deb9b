//! End-to-end tests of the server, bound to 127.0.0.1 port 0: raw RESP
//! bytes, the `redis` client crate, and membership changes under load.

mod admin;
mod client;
mod common;
mod expire;
mod introspect;
mod keyspace;
mod limits;
mod memory;
mod multi;
mod pipeline;
mod python;
mod rebalance;
mod resp;
mod resp3;
mod strings;
