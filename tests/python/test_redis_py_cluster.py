"""redis-py 8's RedisCluster against three running `ringkv node` processes.

Run by the node process tests (crates/cli/tests/nodes/main.rs), which start
the nodes and pass their client ports, the first one first:

    RINGKV_PORTS=7001,7002,7003 python3 tests/python/test_redis_py_cluster.py

With `redirect` as its argument (nodes started with --cluster-redirects),
it checks instead that a node answers -MOVED for a key it does not serve,
and that RedisCluster follows a join: it writes keys, prints "ready", waits
for a line "go PORT" on stdin (the test has started a fourth node on PORT
meanwhile and waited for the join to finish), then reads every key back
through its old map, which the -MOVED replies refresh, without a hop.

RedisCluster learns the slot map from CLUSTER SLOTS on the first node and
sends each key to the node serving its slot. The checks: it finds all three
nodes, CLUSTER SHARDS agrees with CLUSTER SLOTS, its slots agree with
CLUSTER KEYSLOT, reads, writes, multi-key commands and pipelines work, and no request took a forwarding hop (each
node's INFO `ring_forwarded` stays where it was).
"""

import os
import sys

try:
    import redis
    from redis.cluster import RedisCluster
except ImportError:
    sys.exit(
        "redis-py is not installed: pip install -r tests/python/requirements.txt"
    )

PORTS = [int(p) for p in os.environ["RINGKV_PORTS"].split(",")]
KEYS = [f"pyc:{i}" for i in range(300)]


def direct(port):
    return redis.Redis(host="127.0.0.1", port=port, protocol=2)


def forwarded():
    """Requests each node has sent on to another node."""
    return [int(direct(p).info("ring")["ring_forwarded"]) for p in PORTS]


def test_discovers_every_node():
    rc = RedisCluster(host="127.0.0.1", port=PORTS[0])
    ports = sorted(n.port for n in rc.get_nodes())
    assert ports == sorted(PORTS), ports
    assert all(n.server_type == "primary" for n in rc.get_nodes())
    info = direct(PORTS[1]).cluster("info")
    assert info["cluster_state"] == "ok", info
    assert int(info["cluster_slots_assigned"]) == 16384, info
    rc.close()


def test_shards_cover_every_slot_once():
    """CLUSTER SHARDS (Redis 7), as redis-py parses it: one shard per node,
    every slot in exactly one, each shard's slots those CLUSTER SLOTS gives
    its node."""
    rc = RedisCluster(host="127.0.0.1", port=PORTS[0])
    shards = rc.cluster_shards()
    assert len(shards) == len(PORTS), shards
    by_port = {}
    for shard in shards:
        [node] = shard["nodes"]
        assert node[b"role"] == b"master" and node[b"health"] == b"online", node
        by_port[node[b"port"]] = {s for a, b in shard["slots"] for s in range(a, b + 1)}
    assert sorted(by_port) == sorted(PORTS), by_port.keys()
    assert sum(len(s) for s in by_port.values()) == 16384
    assert set().union(*by_port.values()) == set(range(16384))
    for first, last, *nodes in direct(PORTS[1]).execute_command("CLUSTER", "SLOTS"):
        assert set(range(first, last + 1)) <= by_port[nodes[0][1]], (first, last)
    rc.close()


def test_slots_agree_with_keyslot():
    rc = RedisCluster(host="127.0.0.1", port=PORTS[0])
    server = direct(PORTS[2])
    for key in KEYS[:50] + ["{user1}.name", "foo{hash_tag}", "somekey", ""]:
        assert rc.keyslot(key) == server.cluster("keyslot", key), key
    rc.close()


def test_keys_go_straight_to_their_nodes():
    rc = RedisCluster(host="127.0.0.1", port=PORTS[0])
    before = forwarded()
    for i, key in enumerate(KEYS):
        assert rc.set(key, f"v{i}") is True
    for i, key in enumerate(KEYS):
        assert rc.get(key) == f"v{i}".encode(), key
    assert rc.incr("pyc:counter") == 1
    assert rc.expire(KEYS[0], 100) is True
    assert 0 < rc.ttl(KEYS[0]) <= 100
    # Keys sharing a hash tag share a slot: one node runs MSET and MGET.
    assert rc.mset({"{pyc}.a": "1", "{pyc}.b": "2"}) is True
    assert rc.mget("{pyc}.a", "{pyc}.b", "{pyc}.missing") == [b"1", b"2", None]
    # Across slots, redis-py splits by node itself.
    assert rc.mget_nonatomic(KEYS[:40]) == [f"v{i}".encode() for i in range(40)]
    pipe = rc.pipeline()
    for key in KEYS[:60]:
        pipe.get(key)
    assert pipe.execute() == [f"v{i}".encode() for i in range(60)]
    assert rc.delete(*KEYS[200:]) == 100
    after = forwarded()
    assert after == before, f"requests forwarded: {before} -> {after}"
    # Each node holds the keys of its own slots: the data is spread.
    local = [int(direct(p).info("ring")["ring_local_keys"]) for p in PORTS]
    assert all(n > 0 for n in local), local
    rc.close()


def test_a_plain_client_is_forwarded():
    # The same keys through one node without the slot map: served, with
    # hops for the keys of the other two nodes.
    before = sum(forwarded())
    one = direct(PORTS[1])
    assert one.mget(KEYS[:100]) == [f"v{i}".encode() for i in range(100)]
    for key in KEYS[100:130]:
        one.get(key)
    assert sum(forwarded()) > before


def redirect():
    rc = RedisCluster(host="127.0.0.1", port=PORTS[0])
    for i, key in enumerate(KEYS):
        assert rc.set(key, f"r{i}") is True
    # A plain client at the first node: its own keys, -MOVED for others.
    plain = direct(PORTS[0])
    moved = 0
    for key in KEYS[:30]:
        try:
            plain.get(key)
        except redis.exceptions.MovedError as e:
            assert e.slot_id == rc.keyslot(key), (key, e.message)
            assert e.port in PORTS and e.port != PORTS[0], e.message
            moved += 1
    assert 0 < moved < 30, moved
    before = forwarded()
    print("ready", flush=True)
    word, port = sys.stdin.readline().split()
    assert word == "go", word
    new = int(port)
    # The old map still sends every key to one of the first three nodes;
    # those the fourth node now serves come back -MOVED, and redis-py
    # reads the map again.
    for i, key in enumerate(KEYS):
        assert rc.get(key) == f"r{i}".encode(), key
    assert forwarded() == before, f"requests forwarded: {before} -> {forwarded()}"
    assert new in [n.port for n in rc.get_nodes()], rc.get_nodes()
    moved_here = [k for k in KEYS if rc.get_node_from_key(k).port == new]
    assert moved_here, "no key maps to the new node"
    assert int(direct(new).info("ring")["ring_local_keys"]) >= len(moved_here)
    assert int(direct(new).info("ring")["ring_forwarded"]) == 0
    rc.close()
    print("ok redirect")


def main():
    if sys.argv[1:] == ["redirect"]:
        redirect()
        return
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    # Order matters: the key writes come before the forwarding check.
    tests.sort(key=lambda t: t.__code__.co_firstlineno)
    for test in tests:
        test()
        print(f"ok {test.__name__}")


if __name__ == "__main__":
    main()
