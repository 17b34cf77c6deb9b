//! The command table: name, arity, flags, key positions, documentation
//! and handler of every command, one entry each.

use super::{
    Handler, admin, client, config, conn, counter, expire, info, introspect, keyspace, multi, set,
    string_edit, strings,
};

/// One command of the table.
pub struct Spec {
    /// Lowercase name, as `COMMAND` reports it.
    pub name: &'static str,
    /// Redis's arity: `n` means exactly `n` words with the name, `-n` at
    /// least `n`.
    pub arity: i64,
    /// Redis's command flags, for `COMMAND`; `no-auth` also lets the
    /// command run before `AUTH`.
    pub flags: &'static [&'static str],
    /// First key argument, last (negative: from the end) and step, for
    /// `COMMAND`; zeros for none.
    pub keys: (i64, i64, i64),
    /// Group, for `COMMAND DOCS`.
    pub group: &'static str,
    /// One line of help, for `COMMAND DOCS`.
    pub summary: &'static str,
    /// Runs it.
    pub handler: Handler,
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const CONN: &[&str] = &["fast", "stale", "loading"];
const NOAUTH: &[&str] = &["noscript", "loading", "stale", "fast", "no-auth"];
const ADMIN: &[&str] = &["admin", "write"];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $handler:expr, $summary:literal) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            summary: $summary,
            handler: $handler,
        }
    };
}

/// Every command the server understands: the only place a command is
/// declared. Dispatch, arity errors, `COMMAND`, `COMMAND INFO`, `COMMAND
/// DOCS` and `COMMAND COUNT` all read it.
#[rustfmt::skip]
pub static COMMANDS: &[Spec] = &[
    spec!("get", 2, R, (1, 1, 1), "string", strings::get,
        "Returns the value of a key."),
    spec!("set", -3, W, (1, 1, 1), "string", set::set,
        "Sets the value of a key: NX only if absent, XX only if present, GET returns the old value, EX/PX/EXAT/PXAT set an expiry, KEEPTTL keeps it."),
    spec!("setex", 4, W, (1, 1, 1), "string", set::setex,
        "Sets a value that expires after some seconds."),
    spec!("psetex", 4, W, (1, 1, 1), "string", set::psetex,
        "Sets a value that expires after some milliseconds."),
    spec!("getex", -2, &["write", "fast"], (1, 1, 1), "string", set::getex,
        "Returns a value and sets (EX/PX/EXAT/PXAT) or removes (PERSIST) its expiry."),
    spec!("expire", -3, &["write", "fast"], (1, 1, 1), "generic", expire::expire,
        "Sets a key's time to live in seconds (NX, XX, GT, LT)."),
    spec!("pexpire", -3, &["write", "fast"], (1, 1, 1), "generic", expire::pexpire,
        "Sets a key's time to live in milliseconds (NX, XX, GT, LT)."),
    spec!("expireat", -3, &["write", "fast"], (1, 1, 1), "generic", expire::expireat,
        "Sets a key's expiry as a unix time in seconds (NX, XX, GT, LT)."),
    spec!("pexpireat", -3, &["write", "fast"], (1, 1, 1), "generic", expire::pexpireat,
        "Sets a key's expiry as a unix time in milliseconds (NX, XX, GT, LT)."),
    spec!("ttl", 2, R, (1, 1, 1), "generic", expire::ttl,
        "Seconds a key has left to live; -1 without expiry, -2 if absent."),
    spec!("pttl", 2, R, (1, 1, 1), "generic", expire::pttl,
        "Milliseconds a key has left to live; -1 without expiry, -2 if absent."),
    spec!("expiretime", 2, R, (1, 1, 1), "generic", expire::expiretime,
        "A key's expiry as a unix time in seconds; -1 without expiry, -2 if absent."),
    spec!("pexpiretime", 2, R, (1, 1, 1), "generic", expire::pexpiretime,
        "A key's expiry as a unix time in milliseconds; -1 without expiry, -2 if absent."),
    spec!("persist", 2, &["write", "fast"], (1, 1, 1), "generic", expire::persist,
        "Removes a key's expiry; 1 if it had one."),
    spec!("type", 2, R, (1, 1, 1), "generic", expire::key_type,
        "The type of a key's value: string, or none."),
    spec!("touch", -2, R, (1, -1, 1), "generic", expire::touch,
        "Counts the given keys that exist."),
    spec!("unlink", -2, &["write", "fast"], (1, -1, 1), "generic", strings::del,
        "Deletes keys (as DEL: memory is freed at once); returns how many existed."),
    spec!("del", -2, W, (1, -1, 1), "generic", strings::del,
        "Deletes keys; returns how many existed."),
    spec!("exists", -2, R, (1, -1, 1), "generic", strings::exists,
        "Counts the given keys that exist."),
    spec!("mget", -2, R, (1, -1, 1), "string", strings::mget,
        "Returns the values of keys."),
    spec!("mset", -3, W, (1, -1, 2), "string", keyspace::mset,
        "Sets several keys, all at once (one transaction)."),
    spec!("msetnx", -3, W, (1, -1, 2), "string", keyspace::msetnx,
        "Sets several keys only if none exists, all at once; 1 if set."),
    spec!("strlen", 2, R, (1, 1, 1), "string", strings::strlen,
        "Returns the length of a value."),
    spec!("append", 3, WF, (1, 1, 1), "string", string_edit::append,
        "Appends to a value (creating it); returns the new length. Keeps the expiry."),
    spec!("getdel", 2, &["write", "fast"], (1, 1, 1), "string", string_edit::getdel,
        "Returns a value and deletes the key."),
    spec!("getset", 3, WF, (1, 1, 1), "string", string_edit::getset,
        "Sets a value (clearing any expiry) and returns the old one."),
    spec!("setnx", 3, WF, (1, 1, 1), "string", string_edit::setnx,
        "Sets a value only if the key is absent; 1 if it was set."),
    spec!("setrange", 4, W, (1, 1, 1), "string", string_edit::setrange,
        "Overwrites part of a value at an offset, zero-padding; returns the new length."),
    spec!("getrange", 4, &["readonly"], (1, 1, 1), "string", string_edit::getrange,
        "Returns the bytes from start to end (inclusive; negative from the end)."),
    spec!("substr", 4, &["readonly"], (1, 1, 1), "string", string_edit::getrange,
        "GETRANGE under its old name."),
    spec!("incrbyfloat", 3, WF, (1, 1, 1), "string", string_edit::incrbyfloat,
        "Adds a float to a value, atomically; keeps the expiry."),
    spec!("incr", 2, WF, (1, 1, 1), "string", counter::incr,
        "Adds one to an integer value, atomically."),
    spec!("decr", 2, WF, (1, 1, 1), "string", counter::decr,
        "Subtracts one from an integer value, atomically."),
    spec!("incrby", 3, WF, (1, 1, 1), "string", counter::incrby,
        "Adds to an integer value, atomically."),
    spec!("decrby", 3, WF, (1, 1, 1), "string", counter::decrby,
        "Subtracts from an integer value, atomically."),
    spec!("dbsize", 1, R, (0, 0, 0), "server", keyspace::dbsize,
        "Returns the number of keys stored."),
    spec!("info", -1, &["stale", "loading"], (0, 0, 0), "server", info::info,
        "Returns server information, with a Ring section."),
    spec!("command", -1, &["stale", "loading"], (0, 0, 0), "server", introspect::command,
        "Describes the commands (COMMAND, COMMAND COUNT, COMMAND DOCS, COMMAND INFO)."),
    spec!("shutdown", -1, &["admin", "noscript", "loading", "stale", "no_multi"], (0, 0, 0), "server", admin::shutdown,
        "Stops the server as SIGTERM does: stops accepting, lets connections finish what they sent (within --shutdown-timeout), writes the data directory's memory to its files; closes this connection without a reply. NOSAVE, SAVE, NOW and FORCE are accepted and change nothing (the journal keeps every write either way); ABORT answers that no shutdown is in progress. On a node, stops the node's process."),
    spec!("config", -2, &["admin", "stale", "loading"], (0, 0, 0), "server", config::config,
        "CONFIG GET, SET (maxclients, timeout, requirepass), RESETSTAT."),
    spec!("time", 1, &["random", "loading", "stale", "fast"], (0, 0, 0), "server", introspect::time,
        "Returns the server's time: seconds and microseconds."),
    spec!("function", -2, &["noscript"], (0, 0, 0), "scripting", introspect::function,
        "FUNCTION FLUSH and LIST: there are no functions (no scripting)."),
    spec!("scan", -2, &["readonly"], (0, 0, 0), "generic", keyspace::scan,
        "SCAN cursor [MATCH p] [COUNT n] [TYPE t]: a page of keys in token order."),
    spec!("keys", 2, &["readonly"], (0, 0, 0), "generic", keyspace::keys,
        "Every key matching a glob pattern."),
    spec!("randomkey", 1, &["readonly"], (0, 0, 0), "generic", keyspace::randomkey,
        "A random key, or nil if there are none."),
    spec!("flushall", -1, &["write"], (0, 0, 0), "server", keyspace::flushall,
        "Deletes every key (SYNC and ASYNC both wait)."),
    spec!("flushdb", -1, &["write"], (0, 0, 0), "server", keyspace::flushall,
        "Deletes every key of database 0, the only one."),
    spec!("rename", 3, &["write"], (1, 2, 1), "generic", keyspace::rename,
        "Renames a key, with its expiry, in one step."),
    spec!("renamenx", 3, &["write", "fast"], (1, 2, 1), "generic", keyspace::renamenx,
        "Renames a key only if the new name is free; 1 if renamed."),
    spec!("copy", -3, W, (1, 2, 1), "generic", keyspace::copy,
        "Copies a key's value and expiry (REPLACE to overwrite); 1 if copied."),
    spec!("multi", 1, &["noscript", "loading", "stale", "fast"], (0, 0, 0), "transactions", multi::multi,
        "Starts a transaction: commands are queued until EXEC."),
    spec!("exec", 1, &["noscript", "loading", "stale"], (0, 0, 0), "transactions", multi::exec,
        "Runs the queued commands atomically; nil if a watched key changed."),
    spec!("discard", 1, &["noscript", "loading", "stale", "fast"], (0, 0, 0), "transactions", multi::discard,
        "Drops the queued commands."),
    spec!("watch", -2, &["noscript", "loading", "stale", "fast"], (1, -1, 1), "transactions", multi::watch,
        "Makes the next EXEC fail if one of these keys changes."),
    spec!("unwatch", 1, &["noscript", "loading", "stale", "fast"], (0, 0, 0), "transactions", multi::unwatch,
        "Forgets the watched keys."),
    spec!("ping", -1, CONN, (0, 0, 0), "connection", conn::ping,
        "Returns PONG, or the argument."),
    spec!("echo", 2, CONN, (0, 0, 0), "connection", conn::echo,
        "Returns the argument."),
    spec!("quit", -1, NOAUTH, (0, 0, 0), "connection", conn::quit,
        "Closes the connection."),
    spec!("select", 2, CONN, (0, 0, 0), "connection", conn::select,
        "Selects database 0, the only one."),
    spec!("auth", -2, NOAUTH, (0, 0, 0), "connection", conn::auth,
        "Authenticates the connection."),
    spec!("hello", -1, NOAUTH, (0, 0, 0), "connection", conn::hello,
        "Handshake: protocol 2 (RESP3 is refused), optional AUTH and SETNAME."),
    spec!("client", -2, CONN, (0, 0, 0), "connection", client::client,
        "CLIENT ID, GETNAME, SETNAME, INFO, SETINFO."),
    spec!("cluster", -2, &["stale", "loading"], (0, 0, 0), "cluster", admin::cluster,
        "CLUSTER SLOTS, NODES, KEYSLOT, INFO, MYID: the hash slot map of a multi-process cluster (ringkv node), which Redis Cluster clients route by."),
    spec!("ringkv.addnode", -2, ADMIN, (0, 0, 0), "ringkv", admin::addnode,
        "RINGKV.ADDNODE id [weight]: adds a node and moves its keys to it."),
    spec!("ringkv.removenode", -2, ADMIN, (0, 0, 0), "ringkv", admin::removenode,
        "RINGKV.REMOVENODE id [FORCE]: removes a node; its keys go to their new owners. FORCE removes it even where keys cannot move (they are dropped and counted)."),
    spec!("ringkv.resume", 1, ADMIN, (0, 0, 0), "ringkv", admin::resume,
        "RINGKV.RESUME: completes a paused redistribution."),
    spec!("ringkv.repair", 1, ADMIN, (0, 0, 0), "ringkv", admin::repair,
        "RINGKV.REPAIR: deletes stale copies left by failed cleanups; replies with how many stale ranges remain."),
    spec!("ringkv.nodes", 1, &["readonly"], (0, 0, 0), "ringkv", admin::nodes,
        "RINGKV.NODES: the members with weight, keys and state."),
    spec!("ringkv.locate", 2, &["readonly"], (1, 1, 1), "ringkv", admin::locate,
        "RINGKV.LOCATE key: the key's token, owner and the nodes holding a copy."),
];
