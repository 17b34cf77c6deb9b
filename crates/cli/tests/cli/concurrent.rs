//! `concurrently { ... }` blocks: lane order, errors inside blocks.

use super::*;

const BLOCK: &str = "\
add_node(n1)
add_node(n2)
put(base, b0)
concurrently {   # six lanes
    add_node(n3)
    put(a1, x1); get(a1); put(a1, x2); get(a1)
    put(b1, y1); get(b1); delete(b1); get(b1)
    remove_node(n2); get(base)

    put(c1, \"z 1\"); get(c1); get(base);
    add_node(n4, weight=3); stats()
}
get(a1)
get(c1)
stats()
";

#[test]
fn block_outputs_come_in_lane_order_then_op_order() {
    // Several runs: the lanes race, the output must not.
    // Random placement: the final owners depend on the membership only,
    // not on the order in which the lanes changed it.
    for _ in 0..8 {
        let out = run_stdin(BLOCK, &["--placement", "random"], "warn");
        out.expect_code(0);
        let lines = out.out_lines();
        assert_eq!(lines.len(), 11, "stdout:\n{}", out.stdout);
        assert_eq!(
            lines[..7],
            [
                r#""x1""#, r#""x2""#, r#""y1""#, "None", r#""b0""#, r#""z 1""#, r#""b0""#,
            ]
        );
        // The stats inside the block sees whatever the other lanes did so
        // far; only its shape is fixed.
        let inner = parse_stats(lines[7]);
        assert!(inner.nodes.contains_key("n4"), "{inner:?}");
        assert_eq!(lines[8..10], [r#""x2""#, r#""z 1""#]);
        let last = parse_stats(lines[10]);
        assert_eq!(last.epoch, 5);
        let r = ring_with(RingConfig::default(), &[("n1", 1), ("n3", 1), ("n4", 3)]);
        assert_eq!(last.nodes, expected_counts(&r, &["base", "a1", "c1"]));
    }
}

const FAILING: &str = "\
add_node(n1)
put(k, v)
concurrently {
    get(k)
    remove_node(ghost); get(k)
    put(k2, v2); get(k2)
}
get(k2)
put(k3, v3)
get(k3)
";

#[test]
fn a_failing_op_in_a_block_stops_the_run_after_the_block() {
    let out = run_stdin(FAILING, &[], "warn");
    out.expect_code(1);
    // Lane 1 and lane 3 ran; lane 2 stopped at its failure; nothing after.
    assert_eq!(out.out_lines(), [r#""v""#, r#""v2""#]);
    assert!(
        out.err_lines().iter().any(|l| l.contains("line 5")
            && l.contains("remove_node(ghost)")
            && l.contains("`ghost`")),
        "stderr:\n{}",
        out.stderr
    );
}

#[test]
fn keep_going_runs_the_rest_of_the_lane_and_the_script() {
    let out = run_stdin(FAILING, &["--keep-going"], "warn");
    out.expect_code(1);
    assert_eq!(
        out.out_lines(),
        [r#""v""#, r#""v""#, r#""v2""#, r#""v2""#, r#""v3""#]
    );
    assert!(out.stderr.contains("`ghost`"), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr
            .contains("errors: 0 line(s) did not parse, 1 operation(s) failed")
    );
}

#[test]
fn several_failures_in_one_block_are_all_reported() {
    let script = "\
add_node(n1)
put(k, v)
concurrently {
    remove_node(ghost1)
    add_node(n1)
    get(k)
}
get(k)
";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(1);
    assert_eq!(out.out_lines(), [r#""v""#]);
    assert!(out.stderr.contains("`ghost1`"), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("already in the ring"),
        "stderr:\n{}",
        out.stderr
    );
}

#[test]
fn empty_block_and_trailing_semicolons() {
    let script = "\
add_node(n1)
concurrently {
}
concurrently {
    put(k, v); get(k);
}
get(k)
";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    assert_eq!(out.out_lines(), [r#""v""#, r#""v""#]);
}

/// Many lanes writing and reading their own keys while the membership
/// changes under them: every read sees its lane's write.
#[test]
fn many_lanes_read_their_own_writes_during_changes() {
    const LANES: usize = 12;
    const OPS: usize = 30;
    let mut script = String::from("add_node(n0)\nadd_node(n1)\nconcurrently {\n");
    script.push_str("    add_node(n2); add_node(n3); remove_node(n0); add_node(n4, weight=2)\n");
    for lane in 0..LANES {
        let ops: Vec<String> = (0..OPS)
            .map(|i| format!("put(l{lane}k{i}, \"v{lane} {i}\"); get(l{lane}k{i})"))
            .collect();
        script.push_str(&format!("    {}\n", ops.join("; ")));
    }
    script.push_str("}\nstats()\n");
    let out = run_stdin(script, &["--placement", "random"], "warn");
    out.expect_code(0);
    let lines = out.out_lines();
    let expected: Vec<String> = (0..LANES)
        .flat_map(|lane| (0..OPS).map(move |i| format!("\"v{lane} {i}\"")))
        .collect();
    assert_eq!(lines[..lines.len() - 1], expected);
    let stats = parse_stats(lines[lines.len() - 1]);
    assert_eq!(stats.keys, (LANES * OPS) as u64);
    let keys: Vec<String> = (0..LANES)
        .flat_map(|lane| (0..OPS).map(move |i| format!("l{lane}k{i}")))
        .collect();
    let r = ring_with(
        RingConfig::default(),
        &[("n1", 1), ("n2", 1), ("n3", 1), ("n4", 2)],
    );
    assert_eq!(stats.nodes, expected_counts(&r, &keys));
}

/// Reads of preloaded keys and writes of new ones, racing six membership
/// changes that copy one key per batch: every read returns the value, and
/// nothing is lost.
#[test]
fn reads_and_writes_race_membership_changes_without_loss() {
    const PRELOADED: usize = 3000;
    const LANES: usize = 6;
    const ROUNDS: usize = 150;
    let mut script = String::from("add_node(n1)\nadd_node(n2)\n");
    for i in 0..PRELOADED {
        script.push_str(&format!("put(p{i}, pv{i})\n"));
    }
    script.push_str("concurrently {\n");
    script.push_str(
        "    add_node(n3); remove_node(n1); add_node(n4, weight=2); remove_node(n2); add_node(n1); remove_node(n3)\n",
    );
    let mut expected = Vec::new();
    for lane in 0..LANES {
        let mut ops = Vec::new();
        for j in 0..ROUNDS {
            let i = (lane * 500 + j * 3) % PRELOADED;
            ops.push(format!("get(p{i})"));
            expected.push(format!("\"pv{i}\""));
            ops.push(format!("put(l{lane}_{j}, w{j}); get(l{lane}_{j})"));
            expected.push(format!("\"w{j}\""));
            if j % 10 == 0 {
                ops.push(format!("delete(l{lane}_{j}); get(l{lane}_{j})"));
                expected.push("None".to_string());
            }
        }
        script.push_str(&format!("    {}\n", ops.join("; ")));
    }
    script.push_str("}\n");
    for i in (0..PRELOADED).step_by(7) {
        script.push_str(&format!("get(p{i})\n"));
        expected.push(format!("\"pv{i}\""));
    }
    script.push_str("stats()\n");

    let written = PRELOADED + LANES * ROUNDS - LANES * ROUNDS.div_ceil(10);
    for batch in ["1", "512"] {
        let out = run_stdin(script.as_str(), &["--copy-batch", batch], "warn");
        out.expect_code(0);
        let lines = out.out_lines();
        assert_eq!(lines[..lines.len() - 1], expected, "--copy-batch {batch}");
        let stats = parse_stats(lines[lines.len() - 1]);
        assert_eq!(stats.epoch, 8);
        assert_eq!(stats.keys, written as u64, "--copy-batch {batch}");
        assert_eq!(stats.nodes.keys().collect::<Vec<_>>(), ["n1", "n4"]);
    }
}
