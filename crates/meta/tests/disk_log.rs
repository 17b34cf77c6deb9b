//! The Raft log and snapshots in a data directory: openraft's own storage
//! test suite, a restart that keeps the log and the state, the vote read
//! back after reopening, and a damaged log refused at open.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, StorageError};
use ringkv_meta::raft::{DiskLogStore, LOG_TREE, MetaRaft, MetaStore, TypeConfig, test_config};
use ringkv_meta::{Command, FIRST_RAFT_ID, NodeSpec, PlacementSpec};
use ringkv_persist::{DataDir, Durability, FsyncPolicy};

struct OnDisk;

impl StoreBuilder<TypeConfig, DiskLogStore, MetaStore, tempfile::TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, DiskLogStore, MetaStore), StorageError<u64>> {
        let home = tempfile::tempdir().expect("temp dir");
        let dir = DataDir::open(home.path().join("data"), FsyncPolicy::No).expect("data dir");
        Ok((home, DiskLogStore::open(&dir)?, MetaStore::open(&dir)?))
    }
}

/// openraft's suite for `RaftLogStorage` + `RaftStateMachine`
/// implementations, on ours.
#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(OnDisk).expect("openraft's storage suite");
}

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

/// A one-voter group on `dir`, over a network that reaches no one.
async fn start(dir: &DataDir) -> (MetaRaft, MetaStore) {
    let store = MetaStore::open(dir).expect("state machine opens");
    let raft = openraft::Raft::new(
        FIRST_RAFT_ID,
        test_config(),
        ringkv_meta::raft::MemRouter::default().network(FIRST_RAFT_ID),
        DiskLogStore::open(dir).expect("log opens"),
        store.clone(),
    )
    .await
    .expect("raft starts");
    (raft, store)
}

async fn leader(raft: &MetaRaft) {
    raft.wait(Some(Duration::from_secs(10)))
        .current_leader(FIRST_RAFT_ID, "elected")
        .await
        .expect("the only voter leads");
}

/// Opens `path` again once the open before it has closed. openraft's
/// state-machine worker and its snapshot task end a moment after
/// `Raft::shutdown` returns, holding the store's clone of the directory,
/// whose lock refuses a second open until then.
async fn reopen(path: &std::path::Path) -> DataDir {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match DataDir::open(path, FsyncPolicy::No) {
            Err(ringkv_persist::PersistError::Locked { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            opened => return opened.expect("the directory reopens once closed"),
        }
    }
}

/// A process that stops and starts again on its data directory has the
/// same log and the same state, and goes on committing. Also across a snapshot: `test_config` snapshots
/// every 64 entries and purges the log behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_log_and_the_state() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("data");
    let (term, members, applied) = {
        let dir = DataDir::open(&path, FsyncPolicy::No).unwrap();
        let (raft, store) = start(&dir).await;
        let me = BasicNode::new("127.0.0.1:7001");
        raft.initialize(BTreeMap::from([(FIRST_RAFT_ID, me)]))
            .await
            .unwrap();
        leader(&raft).await;
        let placement = PlacementSpec::BalancedPartitions { partitions: 64 };
        raft.client_write(Command::Bootstrap {
            placement,
            node: spec("a", 1),
        })
        .await
        .unwrap();
        // Past one snapshot (64 entries), so the restart starts from it
        // and from a purged log.
        for n in 2..80 {
            let node = spec(&format!("n{n}"), n);
            raft.client_write(Command::Join { node }).await.unwrap();
        }
        // Snapshots are built in the background.
        let metrics = raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.snapshot.is_some() && m.purged.is_some(),
                "a snapshot and a purge",
            )
            .await
            .expect("a snapshot is taken after 64 entries, and the log purged behind it");
        let state = store.state();
        raft.shutdown().await.unwrap();
        (
            metrics.current_term,
            state.members.len(),
            metrics.last_applied,
        )
    };
    assert_eq!(members, 79);
    let dir = reopen(&path).await;
    let (raft, store) = start(&dir).await;
    leader(&raft).await;
    assert!(raft.metrics().borrow().current_term >= term);
    raft.wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(applied.map(|l| l.index), "re-applied")
        .await
        .unwrap();
    assert_eq!(store.state().members.len(), members, "the state survived");
    raft.client_write(Command::Join {
        node: spec("late", 99),
    })
    .await
    .unwrap();
    assert_eq!(store.state().members.len(), members + 1);
    raft.shutdown().await.unwrap();
}

/// The vote and the committed log id read back after the directory is
/// closed and opened again (a one-voter group cannot show a lost vote:
/// it elects itself at the same term either way).
#[tokio::test]
async fn the_vote_and_the_committed_id_survive_reopening() {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, LogId, Vote};
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("data");
    let vote = Vote::new_committed(7, 3);
    let committed = Some(LogId::new(CommittedLeaderId::new(7, 3), 42));
    {
        let dir = DataDir::open(&path, FsyncPolicy::No).unwrap();
        let mut log = DiskLogStore::open(&dir).unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(committed).await.unwrap();
    }
    let dir = DataDir::open(&path, FsyncPolicy::No).unwrap();
    let mut log = DiskLogStore::open(&dir).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), committed);
}

/// An entry of the log that does not decode is refused when the log
/// opens, naming the directory, rather than when Raft first reads it.
#[test]
fn a_damaged_log_entry_is_refused_at_open() {
    let home = tempfile::tempdir().unwrap();
    let dir = DataDir::open(home.path().join("data"), FsyncPolicy::No).unwrap();
    dir.tree(LOG_TREE)
        .unwrap()
        .put(3, b"", b"{not an entry", Durability::NoSync)
        .unwrap();
    let err = DiskLogStore::open(&dir).unwrap_err().to_string();
    assert!(err.contains("does not decode"), "{err}");
    assert!(err.contains(&home.path().display().to_string()), "{err}");
}
