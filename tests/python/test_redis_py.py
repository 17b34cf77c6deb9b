"""redis-py 8 against a running `ringkv serve`.

Run by the server's test suite (crates/server/tests/server/python.rs), which
starts a server and passes its port:

    RINGKV_PORT=6380 python3 tests/python/test_redis_py.py

Each check talks to the server as a user of redis-py would: default settings
(redis-py 8 opens every connection with HELLO 3), and protocol=2.
"""

import os
import sys
import time

try:
    import redis
except ImportError:
    sys.exit(
        "redis-py is not installed: pip install -r tests/python/requirements.txt"
    )

PORT = int(os.environ.get("RINGKV_PORT", "6380"))


def client(**kwargs):
    return redis.Redis(host="127.0.0.1", port=PORT, **kwargs)


def test_default_settings_speak_resp3():
    r = client()
    assert r.ping() is True
    assert r.set("py:greeting", "hello") is True
    assert r.get("py:greeting") == b"hello"
    assert r.get("py:missing") is None
    assert r.incr("py:counter") == 1
    assert r.incrby("py:counter", 41) == 42
    assert r.incrbyfloat("py:float", 1.5) == 1.5
    assert r.mset({"py:a": "1", "py:b": "2"}) is True
    assert r.mget("py:a", "py:missing", "py:b") == [b"1", None, b"2"]
    assert r.append("py:greeting", " world") == 11
    assert r.getrange("py:greeting", 0, 4) == b"hello"
    assert r.delete("py:a", "py:b", "py:missing") == 2
    info = r.client_info()
    assert info["resp"] == "3", info
    assert r.info("server")["redis_version"]
    assert r.config_get("maxclients")["maxclients"]
    assert r.dbsize() >= 1


def test_protocol_2():
    r = client(protocol=2)
    assert r.set("py:p2", "v") is True
    assert r.get("py:p2") == b"v"
    assert r.get("py:missing") is None
    assert r.client_info()["resp"] == "2"
    assert r.config_get("maxclients")["maxclients"]


def test_pipeline_without_transaction():
    r = client()
    pipe = r.pipeline(transaction=False)
    pipe.set("py:pipe", 1).incr("py:pipe").get("py:pipe").get("py:missing")
    assert pipe.execute() == [True, 2, b"2", None]


def test_expiry():
    r = client()
    assert r.set("py:ttl", "v", ex=60) is True
    assert 59 <= r.ttl("py:ttl") <= 60
    assert r.expire("py:ttl", 100, gt=True) is True
    assert r.persist("py:ttl") is True
    assert r.ttl("py:ttl") == -1
    assert r.set("py:short", "v", px=50) is True
    assert r.pttl("py:short") > 0
    time.sleep(0.2)
    assert r.get("py:short") is None
    assert r.ttl("py:short") == -2
    assert r.setex("py:setex", 10, "v") is True
    assert r.getex("py:setex", persist=True) == b"v"
    assert r.ttl("py:setex") == -1
    assert r.type("py:setex") == b"string"


def test_scan_iter():
    r = client()
    for i in range(300):
        r.set(f"py:scan:{i}", i)
    keys = set(r.scan_iter(match="py:scan:*", count=50))
    assert len(keys) == 300, len(keys)
    assert len(r.keys("py:scan:1?")) == 10


def test_pipeline_with_transaction():
    r = client()
    r.set("py:acct:a", 100)
    r.set("py:acct:b", 0)
    pipe = r.pipeline()  # MULTI/EXEC by default
    pipe.decrby("py:acct:a", 30).incrby("py:acct:b", 30).get("py:acct:a")
    assert pipe.execute() == [70, 30, b"70"]
    # A queue-time error aborts the whole transaction: nothing is applied.
    pipe = r.pipeline()
    pipe.set("py:acct:a", 0)
    pipe.execute_command("GET")  # wrong arity
    try:
        pipe.execute()
        raise AssertionError("EXECABORT expected")
    except redis.exceptions.ResponseError as e:
        assert "EXECABORT" in str(e) or "wrong number" in str(e), e
    assert r.get("py:acct:a") == b"70"


def test_watch_with_transaction_helper():
    r = client()
    r.set("py:watched", 1)
    other = client()
    attempts = []

    def double(pipe):
        value = int(pipe.get("py:watched"))
        if not attempts:
            other.set("py:watched", 10)  # a concurrent write: retried
        attempts.append(value)
        pipe.multi()
        pipe.set("py:watched", value * 2)

    r.transaction(double, "py:watched")
    assert attempts == [1, 10], attempts
    assert r.get("py:watched") == b"20"


def main():
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_")]
    failed = 0
    for name, test in tests:
        try:
            test()
            print(f"ok   {name}")
        except Exception as e:  # report every failure, then fail the run
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"redis-py {redis.__version__}: {len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
