//! The redistribution log: `--log-format json` and `RUST_LOG` verbosity.

use super::*;

/// Parses every stderr line as a JSON object.
#[track_caller]
fn json_lines(stderr: &str) -> Vec<serde_json::Map<String, Value>> {
    stderr
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("stderr line {l:?} is not a JSON object: {other:?}"),
        })
        .collect()
}

/// A `rebalance` event.
#[derive(Debug)]
struct Rebalance {
    op: String,
    node: String,
    epoch: u64,
    keys_moved: u64,
    bytes_moved: u64,
    /// Keys of the `transfer done` events logged since the previous change.
    transfer_keys: u64,
}

/// The `"event":"rebalance"` objects of a JSON log, checking their fields.
#[track_caller]
fn rebalances(stderr: &str) -> Vec<Rebalance> {
    let mut out = Vec::new();
    let mut transfer_keys = 0;
    for obj in json_lines(stderr) {
        if obj.get("message").and_then(Value::as_str) == Some("transfer done") {
            transfer_keys += obj["keys"].as_u64().expect("transfer keys is a u64");
        }
        if obj.get("event").and_then(Value::as_str) != Some("rebalance") {
            continue;
        }
        let duration = obj["duration_ms"]
            .as_f64()
            .expect("duration_ms is a number");
        assert!(duration >= 0.0, "duration_ms {duration} in {obj:?}");
        out.push(Rebalance {
            op: obj["op"].as_str().expect("op is a string").to_owned(),
            node: obj["node"].as_str().expect("node is a string").to_owned(),
            epoch: obj["epoch"].as_u64().expect("epoch is a u64"),
            keys_moved: obj["keys_moved"].as_u64().expect("keys_moved is a u64"),
            bytes_moved: obj["bytes_moved"].as_u64().expect("bytes_moved is a u64"),
            transfer_keys: std::mem::take(&mut transfer_keys),
        });
    }
    out
}

/// How many membership changes a script makes.
fn membership_ops(script: &str) -> usize {
    script.matches("add_node(").count() + script.matches("remove_node(").count()
}

#[test]
fn json_log_has_one_rebalance_event_per_change_with_exact_key_counts() {
    const KEYS: usize = 1000;
    let mut script = String::from("add_node(node1)\nadd_node(node2)\nadd_node(node3)\n");
    for i in 0..KEYS {
        script.push_str(&format!("put(key{i}, value{i})\n"));
    }
    script.push_str("add_node(node4)\nremove_node(node2)\nadd_node(big, weight=3)\n");
    script.push_str("get(key0)\nget(key999)\nstats()\n");
    let out = run_stdin(script.as_str(), &["--log-format", "json"], "info");
    out.expect_code(0);
    assert_eq!(out.out_lines()[..2], [r#""value0""#, r#""value999""#]);

    let events = rebalances(&out.stderr);
    assert_eq!(events.len(), membership_ops(&script), "{events:#?}");
    let ops: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.op.as_str(), e.node.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("add_node", "node1"),
            ("add_node", "node2"),
            ("add_node", "node3"),
            ("add_node", "node4"),
            ("remove_node", "node2"),
            ("add_node", "big"),
        ]
    );
    let epochs: Vec<u64> = events.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, [1, 2, 3, 4, 5, 6]);
    for e in &events[..3] {
        assert_eq!((e.keys_moved, e.bytes_moved), (0, 0), "no data yet: {e:?}");
    }

    // Independently: the keys whose owner differs between consecutive rings.
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("key{i}"), format!("value{i}")))
        .collect();
    // The script's history replayed on the default (balanced) placement.
    let r3 = ring(&[("node1", 1), ("node2", 1), ("node3", 1)]);
    let r4 = r3.with_node("node4", 1).unwrap();
    let r5 = r4.without_node("node2").unwrap();
    let r6 = r5.with_node("big", 3).unwrap();
    let rings = [r3, r4, r5, r6];
    for (step, e) in events[3..].iter().enumerate() {
        let (before, after) = (&rings[step], &rings[step + 1]);
        let moved: Vec<&(String, String)> = keys
            .iter()
            .filter(|(k, _)| owner(before, k.as_bytes()) != owner(after, k.as_bytes()))
            .collect();
        let bytes: usize = moved.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(!moved.is_empty(), "some keys move at step {step}");
        assert_eq!(e.keys_moved, moved.len() as u64, "keys moved by {e:?}");
        assert_eq!(e.bytes_moved, bytes as u64, "bytes moved by {e:?}");
        assert_eq!(e.transfer_keys, e.keys_moved, "transfers add up for {e:?}");
    }

    let stats = parse_stats(out.out_lines()[2]);
    assert_eq!(stats.keys, KEYS as u64);
    assert_eq!(
        stats.nodes,
        expected_counts(&rings[3], &keys.iter().map(|(k, _)| k).collect::<Vec<_>>())
    );
}

#[test]
fn json_log_of_the_seed_scenario() {
    let path = examples_dir().join("seed-scenario.ops");
    let script = std::fs::read_to_string(&path).expect("read the seed scenario");
    let out = outcome(
        ringkv()
            .args(["--log-format", "json", "run"])
            .arg(&path)
            .env("RUST_LOG", "info"),
    );
    out.expect_code(0);
    let events = rebalances(&out.stderr);
    // Comments mention no operation by name with a `(`.
    assert_eq!(events.len(), membership_ops(&script));
    assert_eq!(events.len(), 7);
    let epochs: Vec<u64> = events.iter().map(|e| e.epoch).collect();
    assert_eq!(
        epochs,
        (1..=7).collect::<Vec<_>>(),
        "epochs increase by one per change"
    );
    assert_eq!(events.iter().filter(|e| e.op == "remove_node").count(), 2);
    assert_eq!(
        events.iter().map(|e| e.keys_moved).sum::<u64>(),
        events.iter().map(|e| e.transfer_keys).sum::<u64>()
    );
    for obj in json_lines(&out.stderr) {
        assert!(
            obj.contains_key("level") && obj.contains_key("message"),
            "{obj:?}"
        );
    }
}

#[test]
fn json_log_counts_changes_in_blocks_and_from_nodes_option() {
    let script = "\
put(k1, v1)
concurrently {
    add_node(c)
    remove_node(a); put(k2, v2)
    add_node(d, weight=2); get(k1)
}
remove_node(b)
get(k2)
";
    let out = run_stdin(script, &["--nodes", "a,b", "--log-format", "json"], "info");
    out.expect_code(0);
    assert_eq!(out.out_lines(), [r#""v1""#, r#""v2""#]);
    let events = rebalances(&out.stderr);
    assert_eq!(events.len(), 2 + membership_ops(script), "{events:#?}");
    let epochs: Vec<u64> = events.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, (1..=6).collect::<Vec<_>>());
    assert_eq!(
        (events[0].node.as_str(), events[1].node.as_str()),
        ("a", "b")
    );
    assert_eq!(events[5].op, "remove_node");
    assert_eq!(events[5].node, "b");
}

#[test]
fn rust_log_warn_hides_the_info_lines() {
    let path = examples_dir().join("seed-scenario.ops");
    for format in ["human", "json"] {
        let out = outcome(
            ringkv()
                .args(["run", "--log-format", format])
                .arg(&path)
                .env("RUST_LOG", "warn"),
        );
        out.expect_code(0);
        assert_eq!(out.stderr, "", "{format}: nothing at warn level");
        assert_eq!(out.out_lines().len(), 11);
    }
}

#[test]
fn rust_log_debug_shows_each_range() {
    let script = "add_node(n1)\nput(a, 1)\nput(b, 2)\nput(c, 3)\nadd_node(n2)\nget(a)\n";
    let out = run_stdin(script, &[], "debug");
    out.expect_code(0);
    let ranges: Vec<&str> = out
        .err_lines()
        .into_iter()
        .filter(|l| l.contains("range copied"))
        .collect();
    assert!(!ranges.is_empty(), "stderr:\n{}", out.stderr);
    assert!(
        ranges
            .iter()
            .all(|l| l.contains("DEBUG") && l.contains("from=n1") && l.contains("to=n2"))
    );
    assert!(out.stderr.contains("rebalance done"));

    // At the default level, no per-range lines, but the summaries.
    let out = outcome(ringkv().args(["run", "-"]).write_stdin(script));
    out.expect_code(0);
    assert!(
        !out.stderr.contains("range copied"),
        "stderr:\n{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("rebalance done").count(), 2);

    // JSON at debug: the range lines are JSON too, with their fields.
    let out = run_stdin(script, &["--log-format", "json"], "debug");
    out.expect_code(0);
    let copied: Vec<_> = json_lines(&out.stderr)
        .into_iter()
        .filter(|o| o.get("message").and_then(Value::as_str) == Some("range copied"))
        .collect();
    assert!(!copied.is_empty());
    let keys: u64 = copied
        .iter()
        .map(|o| o["keys"].as_u64().expect("keys is a u64"))
        .sum();
    let events = rebalances(&out.stderr);
    assert_eq!(keys, events[1].keys_moved, "ranges add up to the change");
}

/// With `--log-format json`, error reports are JSON objects too, so stderr
/// stays one JSON object per line even when the run fails.
#[test]
fn json_errors_keep_stderr_machine_readable() {
    let script = "add_node(n1)\nput(k, v)\nremove_node(ghost)\nput(k v)\nget(k)\n";
    let out = crate::run_stdin(script, &["--log-format", "json", "--keep-going"], "info");
    assert_eq!(out.code, Some(2));
    assert_eq!(out.stdout, "\"v\"\n");
    let errors: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .filter(|v: &serde_json::Value| v["event"] == "error")
        .collect();
    assert_eq!(errors.len(), 2, "{}", out.stderr);
    assert_eq!(errors[0]["line"], 3);
    assert!(errors[0]["message"].as_str().unwrap().contains("ghost"));
    assert_eq!(errors[1]["line"], 4);
}
