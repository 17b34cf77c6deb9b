//! Forwarded requests travel in batches: every request a node forwards to
//! one peer joins a queue for that peer, and one call carries what has
//! queued up while the calls before it were in flight, like a group
//! commit. Under load many clients' requests share one call: one frame,
//! one task and a couple of system calls on each side instead of one set
//! per request, which is what forwarding cost (`docs/BENCHMARKS.md`,
//! "Node processes against Redis Cluster"). Idle, a request goes alone at
//! once: nothing waits to fill a batch.
//!
//! No call waits on the receiver: a request that would (a fence, the
//! receiver catching up) is not run, and its sender routes it again in a
//! call of its own (`ForwardGroup::wait`), so one fenced key does not hold
//! up the other requests of its call.
//!
//! Order: a group (one connection's requests, see `ForwardGroup`) runs in
//! order on the receiver, and a connection has at most one group in flight
//! (it waits for the answer before it routes more), so calls in flight at
//! once never hold two requests of one connection, and their order between
//! them does not matter.
//!
//! Hand-written because the RPC framework (tarpc) sends one call per
//! request and has no batching of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ringkv_peer::{PeerTransport, Service, TransportError};
use ringkv_server::route::{Executor, Forwarded};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::service::{decode_data as decode, encode_data as encode};
use crate::wire::{Forward, ForwardGroup, GroupAnswer, Stop};

/// Calls in flight to one peer at once; groups that come meanwhile wait
/// and go together in the next. Up to [`SPILL_AFTER`]: then one more call
/// goes, so that calls that hang (a peer cut off, whose calls end only at
/// their time limit) do not hold up the requests queued behind them.
const IN_FLIGHT: usize = 2;

/// How long the next batch waits for a call in flight to end.
const SPILL_AFTER: Duration = Duration::from_millis(20);

/// Groups in one call, at most.
const BATCH_GROUPS: usize = 256;

/// Bytes of requests in one call, about, at most (a group larger than
/// this goes alone).
const BATCH_BYTES: usize = 1 << 20;

/// How long a group may wait in its queue for a call. One that waited
/// longer (a backlog the node cannot send fast enough) is answered that it
/// was not sent (`-TRYAGAIN`), rather than run long after its client gave
/// up.
const QUEUE_LIMIT: Duration = Duration::from_secs(1);

/// Bytes of replies a call's answer may hold before another request of it
/// runs: past it, the groups stop (`Stop::Later`) and their senders send
/// the rest again, each on its own. So an answer is at most this plus one
/// reply, which may be as large as the transport takes (as a request's
/// reply alone could), and a reply of a request that ran is never dropped
/// for room.
const ANSWER_BYTES: usize = 1 << 20;

type Answer = Result<GroupAnswer, TransportError>;

struct Item {
    group: ForwardGroup,
    bytes: usize,
    queued: Instant,
    answer: oneshot::Sender<Answer>,
}

impl Item {
    /// Answers that the group was not sent, if it waited too long.
    fn expire(self, addr: &str) -> Option<Item> {
        if self.queued.elapsed() <= QUEUE_LIMIT {
            return Some(self);
        }
        let _ = self.answer.send(Err(TransportError::Unreachable {
            addr: addr.to_string(),
            why: format!("no call to it was free for {QUEUE_LIMIT:?}; the request was not sent"),
        }));
        None
    }
}

/// The queues of a node's forwarded requests, one per peer address, each
/// drained by its own task (started on first use; it ends when the node's
/// state is dropped).
pub(crate) struct Batches {
    transport: Arc<dyn PeerTransport>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Item>>>,
}

impl Batches {
    pub fn new(transport: Arc<dyn PeerTransport>) -> Batches {
        Batches {
            transport,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `group` to the node at peer address `addr`, with whatever
    /// else is queued for it. A transport error is the whole call's: each
    /// of its groups gets it.
    pub async fn send(&self, addr: &str, group: ForwardGroup) -> Answer {
        let (tx, rx) = oneshot::channel();
        let bytes = group.size();
        let mut item = Item {
            group,
            bytes,
            queued: Instant::now(),
            answer: tx,
        };
        {
            let mut queues = self.queues.lock();
            loop {
                if !queues.contains_key(addr) {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(pump(Arc::clone(&self.transport), addr.to_string(), rx));
                    queues.insert(addr.to_string(), tx);
                }
                match queues[addr].send(item) {
                    Ok(()) => break,
                    // Its task is gone (its runtime stopped): a new one.
                    Err(mpsc::error::SendError(back)) => {
                        item = back;
                        queues.remove(addr);
                    }
                }
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(TransportError::Lost {
                addr: addr.to_string(),
                service: Service::Forward,
                why: "the node's forwarding queue stopped".into(),
            })
        })
    }
}

/// Sends `group` to the node at peer address `addr` in a call of its own,
/// not queued: for a group that may wait there ([`ForwardGroup::wait`]).
pub(crate) async fn send_alone(
    transport: &dyn PeerTransport,
    addr: &str,
    group: ForwardGroup,
) -> Answer {
    let (tx, rx) = oneshot::channel();
    let item = Item {
        bytes: group.size(),
        group,
        queued: Instant::now(),
        answer: tx,
    };
    call(transport, addr, vec![item]).await;
    rx.await.expect("the call answers every item")
}

/// Drains the queue of peer `addr`: one call per batch, [`IN_FLIGHT`] at
/// once, one more whenever the next batch waited [`SPILL_AFTER`].
async fn pump(
    transport: Arc<dyn PeerTransport>,
    addr: String,
    mut queue: mpsc::UnboundedReceiver<Item>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Item> = None;
    loop {
        let first = match held.take() {
            Some(item) => item,
            None => match queue.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let permit = tokio::time::timeout(SPILL_AFTER, Arc::clone(&slots).acquire_owned())
            .await
            .ok()
            .map(|permit| permit.expect("the semaphore is never closed"));
        let Some(first) = first.expire(&addr) else {
            continue;
        };
        let mut bytes = first.bytes;
        let mut items = vec![first];
        while items.len() < BATCH_GROUPS {
            match queue.try_recv().map(|item| item.expire(&addr)) {
                Ok(None) => {}
                Ok(Some(item)) if bytes + item.bytes > BATCH_BYTES => {
                    held = Some(item);
                    break;
                }
                Ok(Some(item)) => {
                    bytes += item.bytes;
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        let transport = Arc::clone(&transport);
        let addr = addr.clone();
        tokio::spawn(async move {
            let _permit = permit;
            call(&*transport, &addr, items).await;
        });
    }
}

/// One call with `items`' groups; each item gets its group's answer.
async fn call(transport: &dyn PeerTransport, addr: &str, items: Vec<Item>) {
    let (groups, answers): (Vec<_>, Vec<_>) =
        items.into_iter().map(|i| (i.group, i.answer)).unzip();
    let count = groups.len();
    let body = encode(&Forward { groups });
    let result = transport
        .call(addr, Service::Forward, body, crate::router::FORWARD_LIMIT)
        .await
        .and_then(|answer| {
            decode::<Vec<GroupAnswer>>(&answer)
                .ok()
                .filter(|a| a.len() == count)
                .ok_or_else(|| TransportError::Lost {
                    addr: addr.to_string(),
                    service: Service::Forward,
                    why: "the peer's answer does not decode".into(),
                })
        });
    match result {
        Ok(groups) => {
            for (answer, group) in answers.into_iter().zip(groups) {
                let _ = answer.send(Ok(group));
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}

/// Runs a [`Forward`] call's groups on this node: each in order, up to
/// its first request this node does not serve; the groups concurrently.
pub(crate) async fn serve(executor: &Executor, forward: Forward) -> Vec<GroupAnswer> {
    let used = AtomicUsize::new(0);
    let groups = forward
        .groups
        .into_iter()
        .map(|group| run_group(executor, group, Some(&used)));
    futures::future::join_all(groups).await
}

/// Runs one group in order, up to its first request this node does not
/// serve. With `used`, the bytes of replies the call's answer holds: past
/// [`ANSWER_BYTES`] the group stops before its next request.
pub(crate) async fn run_group(
    executor: &Executor,
    group: ForwardGroup,
    used: Option<&AtomicUsize>,
) -> GroupAnswer {
    let mut answer = GroupAnswer::default();
    for words in group.requests {
        if used.is_some_and(|used| used.load(Ordering::Relaxed) >= ANSWER_BYTES) {
            answer.stop = Some(Stop::Later);
            break;
        }
        let ran = match group.wait {
            true => Some(executor.run(words, group.protocol, group.epoch).await),
            false => executor.run_now(words, group.protocol, group.epoch).await,
        };
        match ran {
            Some(Forwarded::Reply(reply)) => {
                if let Some(used) = used {
                    used.fetch_add(reply.len(), Ordering::Relaxed);
                }
                answer.replies.push(reply);
            }
            Some(Forwarded::Moved { epoch, node }) => {
                answer.stop = Some(Stop::Moved { epoch, node });
                break;
            }
            None => {
                answer.stop = Some(Stop::Later);
                break;
            }
        }
    }
    answer
}
