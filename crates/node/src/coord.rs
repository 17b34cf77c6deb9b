//! The coordinator: every node runs this loop, and it acts while the node
//! is the Raft leader. Each turn it reads the committed state and takes
//! one step ([`crate::steps::group_step`], then
//! [`crate::steps::change_step`]), so a new leader resumes where the last
//! one stood; what it remembers in memory (failures, the last abort) only
//! paces it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, ServerState};
use ringkv_meta::Command;
use ringkv_meta::raft::MetaMetrics;
use ringkv_peer::{PeerTransport, Service, TransportError};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Inner;
use crate::service::{decode_data as decode, encode_data as encode, propose_here};
use crate::steps::{ChangeStep, GroupStep, change_step, group_step};
use crate::wire::{Proposed, Pull, PullAnswer, PullKind, Pulled};

/// The longest time between turns when there is nothing to do. A turn
/// also starts when Raft's metrics change (an entry applied, a new
/// leader), so a join is taken up as soon as it commits; and after a turn
/// that committed a step, the next one starts at once: a change's steps
/// follow each other without a pause. After a turn whose proposal was
/// refused, the next waits this long whatever happens.
const IDLE: Duration = Duration::from_millis(100);

/// Failed pulls of a change before it is rolled back (before its commit
/// point), about 10 s with [`RETRY`] between them.
const MAX_FAILURES: u32 = 20;
const RETRY: Duration = Duration::from_millis(500);

/// Failed last shipments before the fenced ranges are unfenced (writes to
/// them are held while they stay fenced).
const MAX_SHIP_FAILURES: u32 = 3;

/// Times a change's fence may be lifted after failed last shipments
/// before the change is rolled back.
const MAX_UNFENCES: u32 = 3;

/// After a rollback, the next change waits this long.
const AFTER_ABORT: Duration = Duration::from_secs(2);

/// The limit of one `RangePull` call: the target answers within
/// [`crate::moves::PULL_POLL`] whether its pull ended or not.
const PULL_CALL_LIMIT: Duration = Duration::from_secs(15);

/// `RangePull` calls in a row without an answer (lost, timed out) before
/// the pull counts as failed: the target is down or cut off.
const PULL_CALLS_LOST: u32 = 3;

/// Asks the target at `addr` for the pull `body` until it has ended: the
/// same request joins the pull already running there.
async fn pull(transport: &dyn PeerTransport, addr: &str, body: Vec<u8>) -> Result<Pulled, String> {
    let mut lost = 0;
    loop {
        match transport
            .call(addr, Service::RangePull, body.clone(), PULL_CALL_LIMIT)
            .await
        {
            Ok(answer) => match decode::<PullAnswer>(&answer)? {
                PullAnswer::Done(pulled) => return Ok(pulled),
                PullAnswer::Running => lost = 0,
            },
            Err(e @ (TransportError::Timeout { .. } | TransportError::Lost { .. })) => {
                lost += 1;
                if lost >= PULL_CALLS_LOST {
                    return Err(e.to_string());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// What of Raft's metrics a turn decides by.
type Mark = (
    Option<openraft::LogId<u64>>,
    Option<openraft::LogId<u64>>,
    ServerState,
    Option<u64>,
);

fn mark(m: &MetaMetrics) -> Mark {
    (
        m.last_applied,
        *m.membership_config.log_id(),
        m.state,
        m.current_leader,
    )
}

/// Waits until Raft's metrics differ from `seen`, what the last turn
/// decided by, in something a turn decides by: an entry
/// applied, a new group, a new role. (openraft publishes its metrics after
/// every event, heartbeats included; a turn reads the whole state.)
async fn moved_on(watch: &mut tokio::sync::watch::Receiver<MetaMetrics>, seen: Mark) {
    loop {
        if watch.changed().await.is_err() {
            // Raft stopped: only the timer ends the wait.
            return std::future::pending().await;
        }
        if mark(&watch.borrow_and_update()) != seen {
            return;
        }
    }
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let raft = inner.raft.get().expect("raft starts first").clone();
    let mut failures = 0u32;
    let mut aborted: Option<Instant> = None;
    // Fences lifted for the change in flight (by its number): a change
    // whose last shipment keeps failing is rolled back, not fenced forever.
    let mut unfenced: (u64, u32) = (0, 0);
    // The last turn committed a step of a change.
    let mut stepped = false;
    // When this leader first saw each member down: a forced removal drops
    // a down member's ranges only once its lease has surely run out.
    let mut down_since: HashMap<String, Instant> = HashMap::new();
    let mut watch = raft.metrics();
    let mut seen = mark(&watch.borrow());
    // A proposal of the last turn was not committed: a rejected command
    // is applied too (as a rejection), so waking on the entry would take
    // the same step again at once, a log entry each time, for as long as
    // the reason lasts (found by the simulation: a member down, refusing
    // `BeginChange`, and `FenceRanges` after a pull answered at once).
    let mut refused = false;
    loop {
        if std::mem::take(&mut refused) {
            tokio::time::sleep(IDLE).await;
        } else if !std::mem::take(&mut stepped) {
            tokio::select! {
                _ = tokio::time::sleep(IDLE) => {}
                _ = moved_on(&mut watch, seen) => {}
            }
        }
        let metrics = watch.borrow_and_update().clone();
        seen = mark(&metrics);
        if metrics.state != ServerState::Leader {
            failures = 0;
            down_since.clear();
            continue;
        }
        let state = inner.store.state();
        if !state.is_initialised() {
            continue;
        }
        down_since.retain(|id, _| state.members.get(id).is_some_and(|m| m.down));
        for (id, m) in &state.members {
            if m.down {
                down_since.entry(id.clone()).or_insert_with(Instant::now);
            }
        }
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: BTreeSet<u64> = membership.learner_ids().collect();
        if let Some(step) = group_step(&state, &voters, &learners) {
            let done = match &step {
                GroupStep::AddLearner { raft_id, addr } => {
                    raft.add_learner(*raft_id, BasicNode::new(addr.clone()), false)
                        .await
                }
                GroupStep::SetVoters(ids) => raft.change_membership(ids.clone(), true).await,
                GroupStep::RemoveNodes(ids) => {
                    raft.change_membership(ChangeMembers::RemoveNodes(ids.clone()), false)
                        .await
                }
            };
            match done {
                Ok(written) => {
                    info!(step = ?step, "raft group changed");
                    // The next turn decides by openraft's metrics: it
                    // starts once they show the new group (or after a
                    // pause, as before a step is taken again).
                    let at = written.log_id;
                    stepped = raft
                        .wait(Some(IDLE))
                        .metrics(
                            |m| m.membership_config.log_id().as_ref() >= Some(&at),
                            "the group change in the metrics",
                        )
                        .await
                        .is_ok();
                }
                Err(e) => {
                    warn!(step = ?step, error = %e, "raft group change failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
            continue;
        }
        let Some(step) = change_step(&state) else {
            continue;
        };
        match step {
            ChangeStep::Propose(command) => {
                if matches!(command, Command::BeginChange { .. })
                    && aborted.is_some_and(|at| at.elapsed() < AFTER_ABORT)
                {
                    continue;
                }
                if let Command::DropRanges { .. } = command {
                    let node = state.change.as_ref().map_or("", |c| c.node.as_str());
                    if down_since
                        .get(node)
                        .is_none_or(|at| at.elapsed() < crate::lease::DROP_AFTER)
                    {
                        continue;
                    }
                    warn!(%node, "rebalance: dropping the ranges of a down node (forced removal)");
                }
                stepped = commit(&raft, command).await;
                refused = !stepped;
            }
            ChangeStep::Pull {
                change,
                targets,
                kind,
            } => {
                let dirty = kind == PullKind::LastChanges;
                let node = state
                    .change
                    .as_ref()
                    .map_or(String::new(), |c| c.node.clone());
                let pulls = targets.iter().map(|(target, ranges)| {
                    let inner = Arc::clone(&inner);
                    let addr = state.members.get(target).map(|m| m.peer_addr.clone());
                    let body = encode(&Pull {
                        change,
                        ranges: ranges.clone(),
                        epoch: state.epoch,
                        kind,
                    });
                    async move {
                        let addr = addr.ok_or("the target is not a member")?;
                        pull(&*inner.transport, &addr, body).await
                    }
                });
                // A copy from a node leaving by force that goes down
                // meanwhile can wait on it for a long time (a page call's
                // limit, a slow pace): once its ranges are to be dropped,
                // that is the next step, not this copy. The target stops
                // its copy when asked to clear them. (A last shipment is
                // waited for: once applied, its ranges switch rather than
                // drop.)
                let pulled = futures::future::join_all(pulls);
                let results = if kind != PullKind::Copy {
                    pulled.await
                } else {
                    tokio::select! {
                        results = pulled => results,
                        () = drop_due(&inner, change) => {
                            info!(change, kind = ?kind, node = %node, "rebalance: the node leaving by force is down: dropping its ranges rather than waiting for the pull");
                            continue;
                        }
                    }
                };
                let all: Vec<usize> = targets.values().flatten().copied().collect();
                if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                    failures += 1;
                    warn!(change, kind = ?kind, failures, error = %e, "rebalance: pull failed");
                    let committed = state.change.as_ref().is_some_and(|c| c.committed());
                    if unfenced.0 != change {
                        unfenced = (change, 0);
                    }
                    if dirty && !committed && unfenced.1 >= MAX_UNFENCES {
                        warn!(
                            change,
                            unfences = unfenced.1,
                            "rebalance: the last shipment keeps failing; rolling the change back"
                        );
                        refused |= !commit(
                            &raft,
                            Command::UnfenceRanges {
                                change,
                                ranges: all,
                            },
                        )
                        .await;
                        refused |= !commit(&raft, Command::AbortChange { change }).await;
                        aborted = Some(Instant::now());
                        failures = 0;
                    } else if dirty && (e.contains("recopy") || failures >= MAX_SHIP_FAILURES) {
                        unfenced.1 += 1;
                        // Writes are held while fenced: serve them again and
                        // copy afresh.
                        refused |= !commit(
                            &raft,
                            Command::UnfenceRanges {
                                change,
                                ranges: all,
                            },
                        )
                        .await;
                    } else if !committed && failures >= MAX_FAILURES {
                        warn!(change, "rebalance: rolling the change back");
                        refused |= !commit(&raft, Command::AbortChange { change }).await;
                        aborted = Some(Instant::now());
                        failures = 0;
                    } else {
                        tokio::time::sleep(RETRY).await;
                    }
                    continue;
                }
                failures = 0;
                let keys: u64 = results.iter().flatten().map(|p| p.keys).sum();
                info!(
                    change,
                    ranges = all.len(),
                    keys,
                    kind = ?kind,
                    "rebalance: ranges pulled"
                );
                if dirty {
                    crate::fault::reached("before-switch", &node);
                }
                let next = match kind {
                    PullKind::Copy => Command::FenceRanges {
                        change,
                        ranges: all,
                    },
                    // The last changes are on the targets, or the dropped
                    // ranges are cleared (served empty from the switch).
                    PullKind::LastChanges | PullKind::Clear => Command::SwitchRanges {
                        change,
                        ranges: all,
                    },
                };
                stepped = commit(&raft, next).await;
                if dirty {
                    crate::fault::reached("after-switch", &node);
                }
                refused = !stepped;
            }
        }
    }
}

/// Resolves once the committed state has called for dropping ranges of
/// `change` (its node, leaving by force, is down) for
/// [`crate::lease::DROP_AFTER`], as long as the turn that drops them
/// waits: a node that comes back up sooner keeps its copy going.
async fn drop_due(inner: &Inner, change: u64) {
    let mut since: Option<Instant> = None;
    loop {
        tokio::time::sleep(IDLE).await;
        let due = matches!(
            change_step(&inner.store.state()),
            Some(ChangeStep::Propose(Command::DropRanges { change: c, .. })) if c == change
        );
        since = if due {
            since.or(Some(Instant::now()))
        } else {
            None
        };
        if since.is_some_and(|at| at.elapsed() >= crate::lease::DROP_AFTER) {
            return;
        }
    }
}

/// Commits `command` as the leader; a rejection or a lost leadership is
/// logged, and the next turn decides again from the committed state.
/// Whether it was applied.
async fn commit(raft: &ringkv_meta::raft::MetaRaft, command: Command) -> bool {
    let what = describe(&command);
    match propose_here(raft, command).await {
        Ok(Proposed::Applied(Ok(applied))) => {
            info!(command = %what, epoch = applied.epoch, "rebalance: committed");
            true
        }
        Ok(Proposed::Applied(Err(rejected))) => {
            warn!(command = %what, %rejected, "rebalance: command rejected");
            false
        }
        Ok(Proposed::NotLeader(_)) => false,
        Err(e) => {
            warn!(command = %what, error = %e, "rebalance: proposal failed");
            false
        }
    }
}

/// A command for the log, with range lists shortened to their length (a
/// change on 16,384 partitions, a node's default, names thousands of ranges).
fn describe(command: &Command) -> String {
    match command {
        Command::FenceRanges { change, ranges }
        | Command::UnfenceRanges { change, ranges }
        | Command::SwitchRanges { change, ranges }
        | Command::DropRanges { change, ranges } => {
            let name = format!("{command:?}");
            let name = name.split_whitespace().next().unwrap_or("");
            format!("{name} {{ change: {change}, ranges: {} }}", ranges.len())
        }
        other => format!("{other:?}"),
    }
}

/// The failure detector, run by the leader: every [`PROBE_EVERY`] it asks
/// each member for its status; a member silent for `down_after`, and that
/// failed the last [`DOWN_PROBES`] probes, is committed down (`MarkDown`: its keys answer `-CLUSTERDOWN`, nothing
/// moves), and a down member that answers again is committed up. No
/// gossip: one prober, the leader, whose view is the log's.
pub(crate) async fn detect(inner: Arc<Inner>, down_after: Duration) {
    let raft = inner.raft.get().expect("raft starts first").clone();
    // When each member last answered; reset when this node becomes leader,
    // so that a new leader gives every member a full `down_after`.
    let mut heard: std::collections::HashMap<String, Instant> = Default::default();
    // Probes in a row each member failed: one lost probe (a lost message
    // waits out the call's 2 s limit, most of a short `down_after`) does
    // not mark a member down.
    let mut failed: std::collections::HashMap<String, u32> = Default::default();
    let mut leading = false;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if raft.metrics().borrow().state != ServerState::Leader {
            leading = false;
            continue;
        }
        let state = inner.store.state();
        if !leading {
            leading = true;
            heard.clear();
            failed.clear();
        }
        heard.retain(|id, _| state.members.contains_key(id));
        failed.retain(|id, _| state.members.contains_key(id));
        // A leader marked down while it was cut off answers, obviously:
        // no other node probes it while it leads.
        if let Some(me) = state.members.get(&inner.me)
            && me.down
            && inner.ready.load(std::sync::atomic::Ordering::Acquire)
        {
            let up = Command::MarkUp {
                id: inner.me.clone(),
                client_addr: me.client_addr.clone(),
                peer_addr: me.peer_addr.clone(),
            };
            commit(&raft, up).await;
        }
        let probes = state
            .members
            .iter()
            .filter(|(id, _)| **id != inner.me)
            .map(|(id, member)| {
                let inner = Arc::clone(&inner);
                let addr = member.peer_addr.clone();
                let id = id.clone();
                async move {
                    let ok = crate::service::status(&*inner.transport, &addr)
                        .await
                        .is_ok();
                    (id, ok)
                }
            });
        let now = Instant::now();
        let mut suspects = Vec::new();
        for (id, ok) in futures::future::join_all(probes).await {
            let last = *heard.entry(id.clone()).or_insert(now);
            let member = &state.members[&id];
            let failures = failed.entry(id.clone()).or_default();
            *failures = if ok { 0 } else { *failures + 1 };
            if ok {
                heard.insert(id.clone(), Instant::now());
                if member.down {
                    let up = Command::MarkUp {
                        id,
                        client_addr: member.client_addr.clone(),
                        peer_addr: member.peer_addr.clone(),
                    };
                    commit(&raft, up).await;
                }
            } else if !member.down && last.elapsed() >= down_after && *failures >= DOWN_PROBES {
                suspects.push((id, member.peer_addr.clone(), last));
            }
        }
        // The round's answers can be 2 s old (it waits for its slowest
        // probe): a member that restarted meanwhile is asked once more, all
        // at once, before it is marked down.
        let again = suspects.into_iter().map(|(id, addr, last)| {
            let inner = Arc::clone(&inner);
            async move {
                let ok = crate::service::status(&*inner.transport, &addr)
                    .await
                    .is_ok();
                (id, last, ok)
            }
        });
        for (id, last, ok) in futures::future::join_all(again).await {
            if ok {
                failed.insert(id.clone(), 0);
                heard.insert(id, Instant::now());
                continue;
            }
            warn!(node = %id, silent_ms = last.elapsed().as_millis() as u64, "marking down");
            commit(&raft, Command::MarkDown { id }).await;
        }
    }
}

/// Probes in a row a member must fail, besides being silent for
/// `down_after`, to be marked down.
const DOWN_PROBES: u32 = 2;

/// How often the leader probes the members.
const PROBE_EVERY: Duration = Duration::from_millis(500);
