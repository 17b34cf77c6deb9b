//! The metadata state machine under openraft, three Raft instances in one
//! process over the in-memory network.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use ringkv_meta::raft::{MemLogStore, MemRouter, MetaRaft, MetaStore, test_config};
use ringkv_meta::{
    Command, FIRST_RAFT_ID, MetaState, NodeSpec, Phase, PlacementSpec, Response, choose_voters,
};
use tokio::time::{sleep, timeout};

const PLACEMENT: PlacementSpec = PlacementSpec::BalancedPartitions { partitions: 256 };

fn spec(id: &str, n: u64) -> NodeSpec {
    NodeSpec {
        id: id.into(),
        client_addr: format!("127.0.0.1:{}", 6000 + n),
        peer_addr: format!("127.0.0.1:{}", 7000 + n),
        weight: 1,
        token: 0,
        key_format: ringkv_ring::KEY_FORMAT,
    }
}

struct Group {
    router: MemRouter,
    rafts: BTreeMap<u64, MetaRaft>,
    stores: BTreeMap<u64, MetaStore>,
    /// The state every committed command should produce, applied here in
    /// the order the writes were acknowledged (they are made one at a time).
    model: MetaState,
}

impl Group {
    async fn start(&mut self, id: u64) {
        let store = MetaStore::default();
        let raft = openraft::Raft::new(
            id,
            test_config(),
            self.router.network(id),
            MemLogStore::default(),
            store.clone(),
        )
        .await
        .expect("raft starts");
        self.router.add(id, raft.clone());
        self.rafts.insert(id, raft);
        self.stores.insert(id, store);
    }

    /// The leader as seen by a majority of `among`, waiting up to 5 s.
    async fn leader(&self, among: &[u64]) -> u64 {
        for _ in 0..500 {
            let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
            for id in among {
                if let Some(l) = self.rafts[id].metrics().borrow().current_leader {
                    *seen.entry(l).or_default() += 1;
                }
            }
            if let Some((&l, _)) = seen
                .iter()
                .find(|&(l, &n)| among.contains(l) && n * 2 > among.len())
            {
                return l;
            }
            sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader among {among:?}");
    }

    /// Proposes `command` through the leader of `among`, follows
    /// `ForwardToLeader`, and checks the answer against the model.
    async fn write(&mut self, among: &[u64], command: Command) -> Response {
        for _ in 0..50 {
            let leader = self.leader(among).await;
            match self.rafts[&leader].client_write(command.clone()).await {
                Ok(answer) => {
                    let expected = self.model.apply(&command);
                    assert_eq!(
                        answer.data, expected,
                        "the replicated answer to {command:?}"
                    );
                    return answer.data;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{command:?}: {e}"),
            }
        }
        panic!("{command:?}: no leader accepted it");
    }

    async fn ok(&mut self, among: &[u64], command: Command) -> ringkv_meta::Applied {
        let c = command.clone();
        self.write(among, command)
            .await
            .unwrap_or_else(|e| panic!("{c:?} rejected: {e}"))
    }

    /// Waits until every node of `ids` has applied the same entries and
    /// holds the model's state.
    async fn converge(&self, ids: &[u64]) {
        for _ in 0..500 {
            let applied: BTreeSet<_> = ids
                .iter()
                .map(|id| self.stores[id].last_applied())
                .collect();
            if applied.len() == 1 && ids.iter().all(|id| self.stores[id].state() == self.model) {
                return;
            }
            sleep(Duration::from_millis(10)).await;
        }
        for id in ids {
            eprintln!(
                "node {id}: applied {:?}, epoch {}",
                self.stores[id].last_applied(),
                self.stores[id].state().epoch
            );
        }
        panic!(
            "nodes {ids:?} did not converge on the model (epoch {})",
            self.model.epoch
        );
    }

    /// Drives the change in flight to its end, fencing and switching 8
    /// ranges at a time.
    async fn complete_change(&mut self, among: &[u64]) {
        while let Some(c) = self.model.change.clone() {
            let copying: Vec<usize> = (0..c.ranges.len())
                .filter(|&i| c.ranges[i].phase == Phase::Copying)
                .take(8)
                .collect();
            if copying.is_empty() {
                self.ok(among, Command::FinishChange { change: c.id }).await;
                break;
            }
            self.ok(
                among,
                Command::FenceRanges {
                    change: c.id,
                    ranges: copying.clone(),
                },
            )
            .await;
            self.ok(
                among,
                Command::SwitchRanges {
                    change: c.id,
                    ranges: copying,
                },
            )
            .await;
        }
    }

    /// Makes the group's voters what `choose_voters` says.
    async fn reconcile_voters(&mut self, among: &[u64]) {
        let leader = self.leader(among).await;
        let current: BTreeSet<u64> = self.rafts[&leader]
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let wanted = choose_voters(&self.model, &current);
        if wanted != current {
            self.rafts[&leader]
                .change_membership(ChangeMembers::ReplaceAllVoters(wanted), true)
                .await
                .expect("the voters change");
        }
    }

    async fn add_learner(&self, among: &[u64], raft_id: u64, id: &str) {
        let leader = self.leader(among).await;
        let addr = self.model.members[id].peer_addr.clone();
        self.rafts[&leader]
            .add_learner(raft_id, BasicNode::new(addr), true)
            .await
            .expect("the learner is added");
    }
}

/// Node 1 bootstraps; b and c join as learners and their changes run; the
/// three become voters. Node 3 is added only after the leader purged its
/// log, so it catches up from a snapshot.
async fn three_voters() -> Group {
    let mut g = Group {
        router: MemRouter::default(),
        rafts: BTreeMap::new(),
        stores: BTreeMap::new(),
        model: MetaState::new(),
    };
    g.start(1).await;
    let me = BasicNode::new(spec("a", 1).peer_addr);
    g.rafts[&1]
        .initialize(BTreeMap::from([(FIRST_RAFT_ID, me)]))
        .await
        .unwrap();
    g.ok(
        &[1],
        Command::Bootstrap {
            placement: PLACEMENT,
            node: spec("a", 1),
        },
    )
    .await;

    let b = g
        .ok(&[1], Command::Join { node: spec("b", 2) })
        .await
        .raft_id
        .unwrap();
    let c = g
        .ok(&[1], Command::Join { node: spec("c", 3) })
        .await
        .raft_id
        .unwrap();
    assert_eq!((b, c), (2, 3), "raft ids are handed out in order");
    g.start(b).await;
    g.add_learner(&[1], b, "b").await;
    g.ok(&[1], Command::BeginChange { node: "b".into() }).await;
    g.complete_change(&[1]).await;
    g.reconcile_voters(&[1]).await; // two up members: still one voter

    // Enough entries went by for a snapshot; make sure the log was purged.
    let leader = g.leader(&[1]).await;
    g.rafts[&leader].trigger().snapshot().await.unwrap();
    let purged = timeout(Duration::from_secs(5), async {
        loop {
            if g.rafts[&leader].metrics().borrow().purged.is_some() {
                break;
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(purged.is_ok(), "the leader purged its log");

    g.start(c).await;
    g.add_learner(&[1], c, "c").await;
    g.ok(&[1], Command::BeginChange { node: "c".into() }).await;
    g.complete_change(&[1]).await;
    g.reconcile_voters(&[1]).await;
    let voters: BTreeSet<u64> = g.rafts[&1]
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]));
    g.converge(&[1, 2, 3]).await;
    assert!(
        g.rafts[&3].metrics().borrow().snapshot.is_some(),
        "node 3 installed a snapshot"
    );
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_on_membership_commands() {
    let mut g = three_voters().await;
    let all = [1, 2, 3];
    // A sequence of membership commands, some rejected, through whoever leads.
    let commands = vec![
        Command::MarkDown { id: "c".into() },
        Command::MarkDown { id: "c".into() }, // rejected: no change
        Command::MarkUp {
            id: "c".into(),
            client_addr: "127.0.0.1:6013".into(),
            peer_addr: "127.0.0.1:7003".into(),
        },
        Command::Join { node: spec("d", 4) },
        Command::Join { node: spec("d", 4) }, // rejected: already a member
        Command::Leave {
            id: "b".into(),
            force: false,
        },
        Command::BeginChange { node: "zz".into() }, // rejected: unknown
        Command::Cancel { id: "d".into() },
        Command::BeginChange { node: "b".into() },
        Command::AbortChange { change: 3 },
        Command::Cancel { id: "b".into() },
    ];
    for command in commands {
        let _ = g.write(&all, command).await; // checked against the model inside
    }
    g.converge(&all).await;
    let state = g.stores[&2].state();
    assert_eq!(state.members.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(state.members["c"].client_addr, "127.0.0.1:6013");
    // A change across the group, then the state is the same everywhere.
    g.ok(
        &all,
        Command::Leave {
            id: "b".into(),
            force: false,
        },
    )
    .await;
    g.ok(&all, Command::BeginChange { node: "b".into() }).await;
    g.complete_change(&all).await;
    g.converge(&all).await;
    assert!(!g.stores[&3].state().members.contains_key("b"));
    for raft in g.rafts.values() {
        raft.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_partition_cannot_commit() {
    let mut g = three_voters().await;
    let leader = g.leader(&[1, 2, 3]).await;
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    g.router.partition(&[leader]);

    // The isolated leader cannot commit: its proposal gets no answer (or
    // an error once it steps down).
    let isolated = g.rafts[&leader].clone();
    let proposal = tokio::spawn(async move {
        timeout(
            Duration::from_millis(1500),
            isolated.client_write(Command::Join {
                node: spec("minority", 9),
            }),
        )
        .await
    });
    // The majority elects a leader of its own and commits.
    let applied = g
        .ok(
            &majority,
            Command::Join {
                node: spec("majority", 8),
            },
        )
        .await;
    assert!(applied.raft_id.is_some());
    let answer = proposal.await.unwrap();
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "the minority committed: {answer:?}"
    );
    assert!(!g.stores[&leader].state().members.contains_key("minority"));

    g.router.heal();
    g.converge(&[1, 2, 3]).await;
    for id in [1, 2, 3] {
        let state = g.stores[&id].state();
        assert!(state.members.contains_key("majority"), "node {id}");
        assert!(!state.members.contains_key("minority"), "node {id}");
    }
    for raft in g.rafts.values() {
        raft.shutdown().await.unwrap();
    }
}
