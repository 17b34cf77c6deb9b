//! What a node reports of the cluster as its view has it: `INFO`'s
//! `# Ring` section and `RINGKV.NODES`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringkv_server::route::AdminReply;

use crate::Inner;

/// `INFO`'s `# Ring` section of a node: the cluster as its view has it, and
/// the progress of the change in flight.
pub(crate) fn ring_info(inner: &Inner) -> Vec<(String, String)> {
    let state = inner.view();
    let mut out = vec![
        ("ring_nodes".to_string(), state.members.len().to_string()),
        ("ring_epoch".to_string(), state.epoch.to_string()),
        ("ring_node".to_string(), inner.me.clone()),
        (
            "ring_local_keys".to_string(),
            inner.cluster.dbsize().to_string(),
        ),
        // Calls included, not client requests: a request retried after a
        // wait, or following `Moved`, counts once per call.
        (
            "ring_forwarded".to_string(),
            inner.forwarded.load(Ordering::Relaxed).to_string(),
        ),
        (
            "ring_ready".to_string(),
            u8::from(inner.ready.load(Ordering::Acquire)).to_string(),
        ),
        (
            "ring_rebalancing".to_string(),
            u8::from(state.change.is_some()).to_string(),
        ),
    ];
    if let Some(change) = &state.change {
        let p = change.progress();
        out.push(("rebalance_change".into(), change.id.to_string()));
        out.push(("rebalance_node".into(), change.node.clone()));
        out.push(("rebalance_ranges_copying".into(), p.copying.to_string()));
        out.push(("rebalance_ranges_fenced".into(), p.fenced.to_string()));
        out.push(("rebalance_ranges_dropped".into(), p.dropped.to_string()));
        out.push(("rebalance_ranges_switched".into(), p.switched.to_string()));
    }
    for (i, (id, m)) in state.members.iter().enumerate() {
        out.push((
            format!("node{i}"),
            format!(
                "id={id},client={},peer={},weight={},state={}",
                m.client_addr,
                m.peer_addr,
                m.weight,
                m.state()
            ),
        ));
    }
    out
}

/// `RINGKV.NODES`: one line per member: id, client address, peer address,
/// weight, keys, state, epoch, and the node's role in the Raft group.
pub(crate) async fn nodes(inner: Arc<Inner>) -> AdminReply {
    let state = inner.view();
    let roles = inner.raft.get().map(|raft| {
        let m = raft.metrics().borrow().clone();
        let voters: std::collections::BTreeSet<u64> =
            m.membership_config.membership().voter_ids().collect();
        (voters, m.current_leader)
    });
    let mut lines = Vec::with_capacity(state.members.len());
    let calls = state.members.iter().map(|(id, member)| {
        let inner = Arc::clone(&inner);
        let addr = member.peer_addr.clone();
        let me = *id == inner.me;
        async move {
            if me {
                Some(inner.cluster.dbsize() as u64)
            } else {
                crate::service::status(&*inner.transport, &addr)
                    .await
                    .ok()
                    .map(|s| s.keys)
            }
        }
    });
    let keys = futures::future::join_all(calls).await;
    for ((id, member), keys) in state.members.iter().zip(keys) {
        let role = match &roles {
            Some((_, Some(leader))) if *leader == member.raft_id => "leader",
            Some((voters, _)) if voters.contains(&member.raft_id) => "voter",
            _ => "learner",
        };
        lines.push(format!(
            "{id} {} {} weight={} keys={} state={} epoch={} raft={role}",
            member.client_addr,
            member.peer_addr,
            member.weight,
            keys.map_or("?".to_string(), |k| k.to_string()),
            member.state(),
            state.epoch,
        ));
    }
    if let Some(change) = &state.change {
        let p = change.progress();
        let dropped = if p.dropped > 0 {
            format!(", {} dropped", p.dropped)
        } else {
            String::new()
        };
        lines.push(format!(
            "change {} {:?} {}: {} ranges copying, {} fenced{dropped}, {} switched",
            change.id, change.kind, change.node, p.copying, p.fenced, p.switched
        ));
    }
    AdminReply::Lines(lines)
}
