//! Scripted failures: `examples/failures.ops` shows a change retried,
//! rolled back, paused and resumed, a failed cleanup and a forced removal.

use super::*;

/// Every line `examples/failures.ops` prints, in order.
const EXPECTED_STDOUT: &str = r#"{"epoch":4,"keys":8,"nodes":{"node1":2,"node2":3,"node3":1,"node4":2}}
"v6"
"v7"
{"epoch":7,"keys":8,"nodes":{"node1":2,"node2":1,"node3":0,"node4":2,"node5":3}}
"v1"
{"epoch":8,"keys":8,"nodes":{"node1":1,"node2":1,"node3":0,"node4":2,"node5":3,"node6":1}}
{"epoch":10,"keys":8,"nodes":{"node1":1,"node2":1,"node3":0,"node4":2,"node5":3,"node6":1}}
{"removed":"node1","keys_dropped":8}
{"epoch":16,"keys":0,"nodes":{}}
"#;

/// Asserts that `events` occur in `text` in this order, each on its own line.
#[track_caller]
fn assert_in_order(text: &str, events: &[&[&str]]) {
    let mut lines = text.lines();
    for event in events {
        let found = lines.any(|line| event.iter().all(|part| line.contains(part)));
        assert!(found, "no line with {event:?} (in order) in:\n{text}");
    }
}

#[test]
fn the_failures_example_prints_the_expected_lines_and_log() {
    let script = examples_dir().join("failures.ops");
    let out = outcome(
        ringkv()
            .arg("run")
            .arg("--keep-going")
            .arg(&script)
            .env("RUST_LOG", "info"),
    );
    out.expect_code(1);
    assert_eq!(out.stdout, EXPECTED_STDOUT);
    assert_in_order(
        &out.stderr,
        &[
            // A transient failure, retried.
            &["injecting fault", "node=node4", "FailCalls(2)"],
            &["copy failed, retrying", "attempt=2", "node4"],
            &["rebalance done", "op=add_node", "node=node4"],
            // A crash before the commit point: rolled back.
            &["injecting fault", "node=node1", "Crash"],
            &["rebalance rolled back", "op=add_node", "node=node5"],
            &["error: line 31: add_node(node5): "],
            &["error: line 33: get(\"k7\"): ", "node1"],
            &["node healed", "node=node1"],
            &["rebalance done", "op=add_node", "node=node5"],
            // A crash past it: paused, then resumed.
            &["injecting fault", "node=node6", "Crash"],
            &["rebalance paused", "op=add_node", "node=node6"],
            &["error: line 44: add_node(node6): "],
            &["node healed", "node=node6"],
            &["resuming paused rebalance", "node=node6"],
            &["rebalance done", "op=add_node", "node=node6"],
            // A failed cleanup, kept for repair.
            &["injecting fault", "node=node1", "FailCalls(3)"],
            &["cleanup failed, kept for repair", "node=node1"],
            &["rebalance done", "op=add_node", "node=node7"],
            // The last node: refused, then forced.
            &["error: line 64: remove_node(node1): ", "force"],
            &["last node removed", "node=node1", "keys=8"],
            &["errors: 0 line(s) did not parse, 4 operation(s) failed"],
        ],
    );
}

/// A `fail` waits for a change its node takes part in, and lasts one change:
/// n3's crash rolls back its first addition, not the addition of n4 before
/// it nor its second addition after it.
#[test]
fn a_failure_waits_for_its_node_and_lasts_one_change() {
    let mut script = String::from("add_node(n1)\nadd_node(n2)\n");
    for i in 0..40 {
        script.push_str(&format!("put(k{i}, v{i})\n"));
    }
    script.push_str(
        "fail(n3, mid_copy)\nadd_node(n4)\nadd_node(n3)\nadd_node(n3)\nstats()\nget(k0)\n",
    );
    let out = run_stdin(script, &["--keep-going"], "warn");
    out.expect_code(1);
    let errors: Vec<&str> = out
        .err_lines()
        .into_iter()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].starts_with("error: line 45: add_node(n3): add_node(n3) was rolled back"),
        "{}",
        out.stderr
    );
    let lines = out.out_lines();
    assert_eq!(lines.len(), 2);
    let stats = parse_stats(lines[0]);
    assert_eq!(stats.keys, 40);
    assert_eq!(
        stats.nodes.keys().collect::<Vec<_>>(),
        ["n1", "n2", "n3", "n4"]
    );
    assert_eq!(lines[1], "\"v0\"");
}

/// Forced removal of a member that is not the last moves its keys: none
/// are dropped.
#[test]
fn forced_removal_prints_the_keys_dropped() {
    let script = "add_node(n1)\nadd_node(n2)\nput(a, 1)\nput(b, 2)\nremove_node(n2, force=true)\nremove_node(n1, force=true)\n";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    assert_eq!(
        out.out_lines(),
        [
            r#"{"removed":"n2","keys_dropped":0}"#,
            r#"{"removed":"n1","keys_dropped":2}"#
        ]
    );
}

/// The failure lines are checked like any other: bad points, counts and
/// flags are syntax errors with their column.
#[test]
fn bad_failure_lines_are_syntax_errors() {
    for (line, message) in [
        (
            "fail(n1, sometime)",
            "line 1, column 10: expected a failure point (before_copy, mid_copy, before_switch, cleanup), found `sometime`",
        ),
        (
            "fail(n1, mid_copy, times=0)",
            "line 1, column 26: expected a times that is an integer from 1 to 4294967295, found `0`",
        ),
        (
            "remove_node(n1, force=yes)",
            "line 1, column 23: expected `true` or `false`, found `yes`",
        ),
        (
            "crash()",
            "line 1, column 7: expected 1 argument for crash(id), found 0",
        ),
    ] {
        let out = run_stdin(line, &[], "warn");
        out.expect_code(2);
        assert_eq!(out.stderr, format!("error: {message}\n"), "{line}");
    }
}
