//! Multi-key commands whose keys live on several nodes: `MGET`, `DEL`,
//! `UNLINK`, `EXISTS`, `TOUCH` and `MSET` are split by owner, the parts
//! sent at once (this node's part through its own executor), and the
//! replies put back together in request order. Each part is atomic on its
//! owner; the whole is not (an `MSET` across owners can be seen half
//! applied), as documented.
//!
//! A part answered `Moved` was not applied: only its keys are split again,
//! by the view after catching up, so no key is applied twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_ring::key_token;
use ringkv_server::route::Elsewhere;

use crate::Inner;
use crate::view::{Decision, decide};
use ringkv_server::route::Forwarded;

/// How a command's parts are put back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `MGET`: an array with one item per key, in order.
    Values,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: the sum of the integers.
    Count,
    /// `MSET`: `+OK` when every part answered it (key, value pairs).
    Pairs,
}

/// The shape of a command that can be split, by its table name.
pub(crate) fn shape(name: &[u8]) -> Option<Shape> {
    let name = name.to_ascii_lowercase();
    match &name[..] {
        b"mget" => Some(Shape::Values),
        b"del" | b"unlink" | b"exists" | b"touch" => Some(Shape::Count),
        b"mset" => Some(Shape::Pairs),
        _ => None,
    }
}

/// Rounds of re-splitting after `Moved` answers.
const MAX_ROUNDS: usize = 3;

/// Runs `words` (a command of `shape`) split by owner.
pub(crate) async fn run(
    inner: Arc<Inner>,
    words: Vec<Bytes>,
    shape: Shape,
    protocol: u8,
) -> Elsewhere {
    let step = if shape == Shape::Pairs { 2 } else { 1 };
    // Each key's position in the request, and its words (key, or key and
    // value).
    let items: Vec<Vec<Bytes>> = words[1..].chunks(step).map(|c| c.to_vec()).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    // The raw reply of each item (`Values`), or the parts' counts.
    let mut values: Vec<Option<Bytes>> = vec![None; items.len()];
    let mut count: i64 = 0;
    for _ in 0..MAX_ROUNDS {
        let state = inner.view();
        let mut parts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in &pending {
            match decide(&state, &inner.me, &[key_token(&items[i][0])], false) {
                Decision::Local { .. } => parts.entry(inner.me.clone()).or_default().push(i),
                Decision::Forward(node) => parts.entry(node).or_default().push(i),
                Decision::Down(node) => {
                    return Elsewhere::Error(format!(
                        "CLUSTERDOWN node {node}, which serves one of the keys, is down"
                    ));
                }
                Decision::Fenced => {
                    // Wait for the fence, then split again.
                    if !inner.wait_past(state.epoch, Duration::from_secs(2)).await {
                        return Elsewhere::Error(
                            "TRYAGAIN a key's range is moving between nodes; retry".into(),
                        );
                    }
                    parts.clear();
                    break;
                }
                Decision::CrossNode | Decision::NoCluster => {
                    return Elsewhere::Error("CLUSTERDOWN the cluster is not initialised".into());
                }
            }
        }
        if parts.is_empty() {
            continue;
        }
        let calls = parts.iter().map(|(node, indices)| {
            let mut part = vec![words[0].clone()];
            for &i in indices {
                part.extend(items[i].iter().cloned());
            }
            let inner = Arc::clone(&inner);
            let state = Arc::clone(&state);
            let node = node.clone();
            async move { send(&inner, &state, &node, part, protocol).await }
        });
        let answers = futures::future::join_all(calls).await;
        let mut moved = Vec::new();
        // The latest epoch a part was answered `Moved` at, and by whom.
        let mut latest: Option<(u64, String)> = None;
        for ((node, indices), answer) in parts.into_iter().zip(answers) {
            match answer {
                Err(e) => return Elsewhere::Error(e),
                Ok(Forwarded::Moved { epoch, .. }) => {
                    moved.extend(indices);
                    if latest.as_ref().is_none_or(|(e, _)| epoch > *e) {
                        latest = Some((epoch, node));
                    }
                }
                Ok(Forwarded::Reply(reply)) => {
                    if reply.first() == Some(&b'-') {
                        return Elsewhere::Reply(reply);
                    }
                    match shape {
                        Shape::Values => match parse_array(&reply) {
                            Some(items) if items.len() == indices.len() => {
                                for (i, item) in indices.into_iter().zip(items) {
                                    values[i] = Some(item);
                                }
                            }
                            _ => return bad(&reply),
                        },
                        Shape::Count => match parse_integer(&reply) {
                            Some(n) => count += n,
                            None => return bad(&reply),
                        },
                        Shape::Pairs => {
                            if &reply[..] != b"+OK\r\n" {
                                return bad(&reply);
                            }
                        }
                    }
                }
            }
        }
        if moved.is_empty() {
            return Elsewhere::Reply(assemble(shape, values, count));
        }
        if let Some((epoch, node)) = latest
            && let Err(e) = crate::router::catch_up(&inner, &state, &node, epoch).await
        {
            return Elsewhere::Error(e);
        }
        pending = moved;
    }
    Elsewhere::Error("TRYAGAIN the keys' nodes kept changing; retry".into())
}

fn bad(reply: &[u8]) -> Elsewhere {
    Elsewhere::Error(format!(
        "ERR a part of the command answered unexpectedly: {}",
        String::from_utf8_lossy(&reply[..reply.len().min(64)])
    ))
}

/// Sends one part to `node` (through this node's executor if it is this
/// node).
async fn send(
    inner: &Inner,
    state: &ringkv_meta::MetaState,
    node: &str,
    words: Vec<Bytes>,
    protocol: u8,
) -> Result<Forwarded, String> {
    if node == inner.me {
        let executor = inner
            .executor
            .get()
            .ok_or("ERR this node is not serving yet")?;
        return Ok(executor.run(words, protocol, state.epoch).await);
    }
    crate::router::forward_once(inner, state, node, &words, protocol).await
}

fn assemble(shape: Shape, values: Vec<Option<Bytes>>, count: i64) -> Bytes {
    match shape {
        Shape::Values => {
            let mut out = format!("*{}\r\n", values.len()).into_bytes();
            for v in values {
                out.extend_from_slice(&v.expect("every key was answered"));
            }
            out.into()
        }
        Shape::Count => format!(":{count}\r\n").into(),
        Shape::Pairs => Bytes::from_static(b"+OK\r\n"),
    }
}

/// The line at the start of `bytes` (without its `\r\n`) and the rest.
fn line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    Some((&bytes[..end], &bytes[end + 2..]))
}

fn parse_integer(reply: &[u8]) -> Option<i64> {
    let (head, _) = line(reply)?;
    std::str::from_utf8(head.strip_prefix(b":")?)
        .ok()?
        .parse()
        .ok()
}

/// The items of an array of bulk strings and nulls (RESP2 `$-1`, RESP3
/// `_`), each as its raw encoding.
fn parse_array(reply: &Bytes) -> Option<Vec<Bytes>> {
    let (head, mut rest) = line(reply)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let start = reply.len() - rest.len();
        let (head, after) = line(rest)?;
        rest = match head.first()? {
            b'_' => after,
            b'$' => {
                let len: i64 = std::str::from_utf8(&head[1..]).ok()?.parse().ok()?;
                if len < 0 {
                    after
                } else {
                    after.get(len as usize + 2..)?
                }
            }
            _ => return None,
        };
        items.push(reply.slice(start..reply.len() - rest.len()));
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_of_values_and_nulls_parse_to_their_raw_items_in_both_protocols() {
        let reply = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n$4\r\nb\r\nc\r\n");
        let items = parse_array(&reply).unwrap();
        assert_eq!(
            items,
            [&b"$1\r\na\r\n"[..], b"$-1\r\n", b"$4\r\nb\r\nc\r\n"]
        );
        let reply = Bytes::from_static(b"*2\r\n_\r\n$0\r\n\r\n");
        assert_eq!(parse_array(&reply).unwrap(), [&b"_\r\n"[..], b"$0\r\n\r\n"]);
        assert_eq!(parse_array(&Bytes::from_static(b"*2\r\n$1\r\na\r\n")), None);
        assert_eq!(parse_integer(b":42\r\n"), Some(42));
        assert_eq!(parse_integer(b"+OK\r\n"), None);
        let values = vec![Some(items[0].clone()), Some(Bytes::from_static(b"$-1\r\n"))];
        assert_eq!(
            &assemble(Shape::Values, values, 0)[..],
            b"*2\r\n$1\r\na\r\n$-1\r\n"
        );
    }
}
