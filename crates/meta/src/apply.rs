//! The transitions: one pure function per command.
//!
//! Each checks every precondition before it changes anything, so a rejected
//! command leaves the state exactly as it was; an applied one changes it and
//! raises the epoch by one. Nothing here reads a clock, a random source or
//! the environment, and maps are ordered (`BTreeMap`): the same commands in
//! the same order give equal states on every replica.

use ringkv_ring::{NodeId, Ring};

use crate::change::{Change, ChangeKind, Phase, RangeMove};
use crate::command::{Applied, Command, Rejected, Response};
use crate::member::{Lifecycle, Member, NodeSpec};
use crate::serial::PlacementSpec;
use crate::state::{FIRST_RAFT_ID, MetaState};

/// Applies `command` to `state`: the next state and the answer. A rejected
/// command returns the state unchanged.
///
/// ```
/// use ringkv_meta::{Command, MetaState, NodeSpec, PlacementSpec, apply};
///
/// let node = |id: &str| NodeSpec {
///     id: id.into(),
///     client_addr: format!("{id}:6379"),
///     peer_addr: format!("{id}:7379"),
///     weight: 1,
///     token: 0,
///     key_format: ringkv_ring::KEY_FORMAT,
/// };
/// let placement = PlacementSpec::BalancedPartitions { partitions: 64 };
/// let (state, r) = apply(MetaState::new(), &Command::Bootstrap { placement, node: node("a") });
/// assert_eq!(r.unwrap().epoch, 1);
/// let (state, r) = apply(state, &Command::Join { node: node("b") });
/// assert_eq!(r.unwrap().raft_id, Some(2));
/// let (state, r) = apply(state, &Command::BeginChange { node: "b".into() });
/// let change = r.unwrap().change.unwrap();
/// assert!(state.change.as_ref().unwrap().ranges.iter().all(|m| m.to == "b"));
/// // Rejected: nothing changes.
/// let before = state.clone();
/// let (state, r) = apply(state, &Command::FinishChange { change });
/// assert!(r.is_err());
/// assert_eq!(state, before);
/// ```
pub fn apply(mut state: MetaState, command: &Command) -> (MetaState, Response) {
    let response = state.apply(command);
    (state, response)
}

impl MetaState {
    /// Applies `command` in place; see [`apply`].
    pub fn apply(&mut self, command: &Command) -> Response {
        if !self.is_initialised() && !matches!(command, Command::Bootstrap { .. }) {
            return Err(Rejected::NotInitialised);
        }
        let mut applied = Applied {
            epoch: self.epoch + 1,
            raft_id: None,
            change: None,
        };
        match command {
            Command::Bootstrap { placement, node } => {
                applied.raft_id = Some(self.bootstrap(*placement, node)?);
            }
            Command::Join { node } => applied.raft_id = Some(self.join(node)?),
            Command::Leave { id, force } => self.leave(id, *force)?,
            Command::Cancel { id } => self.cancel(id)?,
            Command::BeginChange { node } => applied.change = Some(self.begin(node)?),
            Command::FenceRanges { change, ranges } => {
                self.check_ranges(*change, ranges, Phase::Fenced)?;
                self.set_phase(ranges, Phase::Fenced);
            }
            Command::UnfenceRanges { change, ranges } => {
                self.check_ranges(*change, ranges, Phase::Copying)?;
                self.set_phase(ranges, Phase::Copying);
            }
            Command::SwitchRanges { change, ranges } => {
                self.check_ranges(*change, ranges, Phase::Switched)?;
                self.set_phase(ranges, Phase::Switched);
            }
            Command::DropRanges { change, ranges } => {
                self.check_ranges(*change, ranges, Phase::Dropped)?;
                self.set_phase(ranges, Phase::Dropped);
            }
            Command::FinishChange { change } => self.finish(*change)?,
            Command::AbortChange { change } => self.abort(*change)?,
            Command::MarkDown { id } => {
                let m = self.member_mut(id)?;
                if m.down {
                    return Err(Rejected::NoChange);
                }
                m.down = true;
            }
            Command::MarkUp {
                id,
                client_addr,
                peer_addr,
            } => {
                let m = self.member_mut(id)?;
                if !m.down && &m.client_addr == client_addr && &m.peer_addr == peer_addr {
                    return Err(Rejected::NoChange);
                }
                m.down = false;
                m.client_addr.clone_from(client_addr);
                m.peer_addr.clone_from(peer_addr);
            }
        }
        self.epoch += 1;
        debug_assert_eq!(self.epoch, applied.epoch);
        Ok(applied)
    }

    fn member_mut(&mut self, id: &str) -> Result<&mut Member, Rejected> {
        self.members
            .get_mut(id)
            .ok_or_else(|| Rejected::UnknownMember { id: id.into() })
    }

    fn member(&self, id: &str) -> Result<&Member, Rejected> {
        self.members
            .get(id)
            .ok_or_else(|| Rejected::UnknownMember { id: id.into() })
    }

    fn bootstrap(&mut self, placement: PlacementSpec, node: &NodeSpec) -> Result<u64, Rejected> {
        if self.is_initialised() || !self.members.is_empty() || self.epoch != 0 {
            return Err(Rejected::AlreadyInitialised);
        }
        check_key_format(node)?;
        let empty = placement
            .placement()
            .empty_ring()
            .map_err(|e| Rejected::BadPlacement {
                reason: e.to_string(),
            })?;
        let ring = empty
            .with_node(node.id.as_str(), node.weight)
            .map_err(|e| bad_node(&node.id, e))?;
        let epoch = self.epoch + 1;
        self.ring = Some(ring.with_epoch(epoch));
        self.members.insert(
            node.id.clone(),
            new_member(node, FIRST_RAFT_ID, Lifecycle::Up, epoch),
        );
        self.next_raft_id = FIRST_RAFT_ID + 1;
        self.next_change = 1;
        Ok(FIRST_RAFT_ID)
    }

    fn join(&mut self, node: &NodeSpec) -> Result<u64, Rejected> {
        if let Some(m) = self.members.get(&node.id) {
            return Err(Rejected::AlreadyMember {
                id: node.id.clone(),
                raft_id: m.raft_id,
                token: m.token,
            });
        }
        NodeId::validate(&node.id).map_err(|e| bad_node(&node.id, e))?;
        check_key_format(node)?;
        if node.weight == 0 {
            return Err(Rejected::BadNode {
                id: node.id.clone(),
                reason: "the weight must be at least 1".into(),
            });
        }
        if self.members.len() >= ringkv_ring::MAX_NODES {
            return Err(Rejected::BadNode {
                id: node.id.clone(),
                reason: format!(
                    "the cluster has {} members, the most it can hold",
                    self.members.len()
                ),
            });
        }
        let raft_id = self.next_raft_id;
        let member = new_member(node, raft_id, Lifecycle::Joining, self.epoch + 1);
        self.members.insert(node.id.clone(), member);
        self.next_raft_id += 1;
        Ok(raft_id)
    }

    fn leave(&mut self, id: &str, force: bool) -> Result<(), Rejected> {
        let epoch = self.epoch + 1;
        let m = self.member_mut(id)?;
        if m.lifecycle != Lifecycle::Up {
            return Err(wrong_state(
                id,
                m,
                "only an up member can be asked to leave (withdraw a join with Cancel)",
            ));
        }
        m.lifecycle = Lifecycle::Leaving { force };
        m.since = epoch;
        Ok(())
    }

    fn cancel(&mut self, id: &str) -> Result<(), Rejected> {
        if let Some(c) = &self.change
            && c.node == id
        {
            return Err(Rejected::ChangeInProgress {
                change: c.id,
                node: c.node.clone(),
            });
        }
        let epoch = self.epoch + 1;
        let m = self.member_mut(id)?;
        match m.lifecycle {
            Lifecycle::Up => Err(wrong_state(
                id,
                m,
                "only a pending join or leave can be cancelled",
            )),
            Lifecycle::Leaving { .. } => {
                m.lifecycle = Lifecycle::Up;
                m.since = epoch;
                Ok(())
            }
            Lifecycle::Joining => {
                self.members.remove(id);
                Ok(())
            }
        }
    }

    fn begin(&mut self, id: &str) -> Result<u64, Rejected> {
        if let Some(c) = &self.change {
            return Err(Rejected::ChangeInProgress {
                change: c.id,
                node: c.node.clone(),
            });
        }
        let m = self.member(id)?;
        let ring = self.ring.as_ref().expect("initialised");
        let (kind, force, to) = match m.lifecycle {
            Lifecycle::Up => {
                return Err(wrong_state(
                    id,
                    m,
                    "only a joining or leaving member has a change",
                ));
            }
            Lifecycle::Joining => (
                ChangeKind::Add,
                false,
                ring.with_node(id, m.weight).map_err(|e| bad_node(id, e))?,
            ),
            Lifecycle::Leaving { force } => (
                ChangeKind::Remove,
                force,
                ring.without_node(id).map_err(|e| bad_node(id, e))?,
            ),
        };
        if to.is_empty() && !force {
            return Err(Rejected::LastMember { id: id.into() });
        }
        let ranges = plan(ring, &to);
        // Every node the plan needs must be up, but the leaving node of a
        // forced removal, whose ranges may be dropped.
        for r in &ranges {
            let may_drop = kind == ChangeKind::Remove && force && r.from == id;
            for (node, needed) in [(&r.from, !may_drop), (&r.to, true)] {
                if needed && self.members.get(node.as_str()).is_none_or(|m| m.down) {
                    return Err(Rejected::NodeDown { id: node.clone() });
                }
            }
        }
        if kind == ChangeKind::Add && m.down {
            return Err(Rejected::NodeDown { id: id.into() });
        }
        let epoch = self.epoch + 1;
        let number = self.next_change;
        self.next_change += 1;
        self.change = Some(Change {
            id: number,
            kind,
            node: id.into(),
            force,
            to: to.with_epoch(epoch),
            ranges,
        });
        if self.change.as_ref().is_some_and(|c| c.ranges.is_empty()) {
            // Nothing to move (a first node, a node whose share is below one
            // partition, the last node's forced removal): done at once.
            self.complete(epoch);
        }
        Ok(number)
    }

    /// Checks that `ranges` of change `number` may move to phase `to`.
    fn check_ranges(&self, number: u64, ranges: &[usize], to: Phase) -> Result<(), Rejected> {
        let change = match &self.change {
            Some(c) if c.id == number => c,
            _ => return Err(Rejected::NoSuchChange { change: number }),
        };
        let mut seen = std::collections::BTreeSet::new();
        let bad_index = |range| Rejected::NoSuchRange {
            change: number,
            range,
            ranges: change.ranges.len(),
        };
        if ranges.is_empty() {
            return Err(bad_index(0));
        }
        for &i in ranges {
            let r = change.ranges.get(i).ok_or(bad_index(i))?;
            if !seen.insert(i) {
                return Err(bad_index(i));
            }
            let wrong = |needs: &str| Rejected::WrongPhase {
                change: number,
                range: i,
                phase: r.phase,
                needs: needs.to_string(),
            };
            let down = |id: &str| self.members.get(id).is_none_or(|m| m.down);
            match to {
                Phase::Fenced => {
                    if r.phase != Phase::Copying {
                        return Err(wrong("only a copying range can be fenced"));
                    }
                    for node in [&r.from, &r.to] {
                        if down(node) {
                            return Err(Rejected::NodeDown { id: node.clone() });
                        }
                    }
                }
                Phase::Copying => {
                    if r.phase != Phase::Fenced {
                        return Err(wrong("only a fenced range can be unfenced"));
                    }
                }
                Phase::Switched => {
                    if !matches!(r.phase, Phase::Fenced | Phase::Dropped) {
                        return Err(wrong(
                            "a range is fenced (or dropped and cleared) before it switches",
                        ));
                    }
                    if down(&r.to) {
                        return Err(Rejected::NodeDown { id: r.to.clone() });
                    }
                }
                Phase::Dropped => {
                    let cannot = |why: &str| Rejected::CannotDrop {
                        change: number,
                        range: i,
                        why: why.to_string(),
                    };
                    if change.kind != ChangeKind::Remove || !change.force {
                        return Err(cannot("only a forced removal drops ranges"));
                    }
                    if r.from != change.node {
                        return Err(cannot("its source is not the leaving node"));
                    }
                    if !down(&r.from) {
                        return Err(cannot("its source is up; move the range instead"));
                    }
                    if r.phase.is_done() {
                        return Err(wrong("the range is already switched or dropped"));
                    }
                    if down(&r.to) {
                        return Err(Rejected::NodeDown { id: r.to.clone() });
                    }
                }
            }
        }
        Ok(())
    }

    fn set_phase(&mut self, ranges: &[usize], phase: Phase) {
        let change = self.change.as_mut().expect("checked");
        for &i in ranges {
            change.ranges[i].phase = phase;
        }
    }

    fn finish(&mut self, number: u64) -> Result<(), Rejected> {
        let change = match &self.change {
            Some(c) if c.id == number => c,
            _ => return Err(Rejected::NoSuchChange { change: number }),
        };
        if !change.complete() {
            return Err(Rejected::Incomplete {
                change: number,
                pending: change.progress().pending(),
            });
        }
        self.complete(self.epoch + 1);
        Ok(())
    }

    /// Puts the change's ring in force at `epoch` and settles its node.
    fn complete(&mut self, epoch: u64) {
        let change = self.change.take().expect("a change is in flight");
        self.ring = Some(change.to.with_epoch(epoch));
        match change.kind {
            ChangeKind::Add => {
                let m = self
                    .members
                    .get_mut(&change.node)
                    .expect("the node of a change is a member");
                m.lifecycle = Lifecycle::Up;
                m.since = epoch;
            }
            ChangeKind::Remove => {
                self.members.remove(&change.node);
            }
        }
    }

    fn abort(&mut self, number: u64) -> Result<(), Rejected> {
        let change = match &self.change {
            Some(c) if c.id == number => c,
            _ => return Err(Rejected::NoSuchChange { change: number }),
        };
        if change.committed() {
            return Err(Rejected::Committed { change: number });
        }
        // The abandoned ring's epoch was seen; the restored ring gets the
        // next one, so that every epoch names one ring.
        let epoch = self.epoch + 1;
        self.change = None;
        let ring = self.ring.take().expect("initialised");
        self.ring = Some(ring.with_epoch(epoch));
        Ok(())
    }
}

/// The ranges that move from `from` to `to`, every one `Copying`. Nothing
/// moves into or out of an empty ring: a first node starts empty, and the
/// last node's forced removal drops what it held.
pub(crate) fn plan(from: &Ring, to: &Ring) -> Vec<RangeMove> {
    if from.is_empty() || to.is_empty() {
        return Vec::new();
    }
    from.diff(to)
        .moves
        .into_iter()
        .map(|m| RangeMove {
            start: m.range.start,
            end: m.range.end,
            from: m.from.as_str().to_string(),
            to: m.to.as_str().to_string(),
            phase: Phase::Copying,
        })
        .collect()
}

fn new_member(node: &NodeSpec, raft_id: u64, lifecycle: Lifecycle, since: u64) -> Member {
    Member {
        raft_id,
        client_addr: node.client_addr.clone(),
        peer_addr: node.peer_addr.clone(),
        weight: node.weight,
        lifecycle,
        down: false,
        since,
        token: node.token,
    }
}

/// Every member places keys as this build does ([`ringkv_ring::KEY_FORMAT`]):
/// a node of another layout would take keys outside its ranges for its
/// own and delete them in its cleanup.
fn check_key_format(node: &NodeSpec) -> Result<(), Rejected> {
    match node.key_format == ringkv_ring::KEY_FORMAT {
        true => Ok(()),
        false => Err(Rejected::BadNode {
            id: node.id.clone(),
            reason: format!(
                "it places keys by layout {}, this cluster by layout {}: run the same ringkv version on every node",
                node.key_format,
                ringkv_ring::KEY_FORMAT
            ),
        }),
    }
}

fn bad_node(id: &str, e: ringkv_ring::RingError) -> Rejected {
    Rejected::BadNode {
        id: id.into(),
        reason: e.to_string(),
    }
}

fn wrong_state(id: &str, m: &Member, needs: &'static str) -> Rejected {
    Rejected::WrongState {
        id: id.into(),
        state: m.state().to_string(),
        needs: needs.into(),
    }
}
