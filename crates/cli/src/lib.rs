//! The `ringkv` command-line tool as a library: the script language, the
//! runner that plays scripts against a [`ringkv_cluster::Cluster`], and the
//! logging setup. The binary in `main.rs` only parses arguments.
//!
//! ```
//! use ringkv_cli::run::{RunOptions, Runner};
//! use ringkv_cluster::Cluster;
//!
//! let script = "add_node(node1)\nput(key1, value1)\nget(key1)\nget(nope)\n";
//! let mut out = Vec::new();
//! let summary = Runner::new(Cluster::default(), RunOptions::default())
//!     .run(script.as_bytes(), &mut out)
//!     .unwrap();
//! assert_eq!(String::from_utf8(out).unwrap(), "\"value1\"\nNone\n");
//! assert_eq!(summary.exit_code(), 0);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod exec;
pub mod logging;
pub mod node;
pub mod pool;
pub mod run;
pub mod script;
