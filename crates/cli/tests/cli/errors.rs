//! Bad input: syntax errors, failed operations, `--keep-going`, missing files.

use super::*;

/// Asserts `stderr` has a line with every one of `parts`.
#[track_caller]
fn assert_err_line(out: &Outcome, parts: &[&str]) {
    assert!(
        out.err_lines()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p))),
        "no stderr line with all of {parts:?}; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn malformed_lines_stop_with_exit_2_and_say_where_and_what() {
    // (bad line, column, what the message says)
    let cases: &[(&str, usize, &str)] = &[
        ("put(k2 v2)", 8, "expected `,` or `)`, found `v2`"),
        (
            "pt(k2)",
            1,
            "expected an operation name (add_node, remove_node, put, get, delete, stats, crash, heal, fail, resume), found `pt`",
        ),
        ("get", 4, "expected `(` after `get`, found end of line"),
        (
            "put(k2)",
            7,
            "expected 2 arguments for put(key, value), found 1",
        ),
        ("put(k2, v2) x", 13, "expected end of line, found `x`"),
        (
            r#"put(k2, "v2)"#,
            9,
            "unterminated string starting at column 9",
        ),
        (r#"put(k2, "\q")"#, 10, r"unknown escape `\q`"),
        (
            r#"put(k2, "\xZZ")"#,
            10,
            r"expected two hex digits after `\x`",
        ),
        (
            "add_node(n9, weight=0)",
            21,
            "expected a weight that is an integer",
        ),
        ("put(a, b); get(a)", 10, "found `;`"),
        ("}", 1, "`}` without an open `concurrently` block"),
    ];
    for &(bad, column, message) in cases {
        // The bad line is line 6, after a comment and a blank line.
        let script =
            format!("# setup\nadd_node(n1)\n\nput(k1, v1)\nget(k1)\n{bad}\nget(k1)\nput(k3, v3)\n");
        let out = run_stdin(script, &[], "warn");
        assert_eq!(
            out.code,
            Some(2),
            "exit code for {bad:?}; stderr:\n{}",
            out.stderr
        );
        assert_err_line(&out, &[&format!("line 6, column {column}:"), message]);
        assert_eq!(out.stdout, "\"v1\"\n", "only the output before {bad:?}");
    }
}

#[test]
fn a_line_that_is_not_utf8_is_a_syntax_error() {
    let mut script = b"add_node(n1)\nput(k, v)\nget(k)\nput(k, \"".to_vec();
    script.extend_from_slice(b"\xff\")\nget(k)\n");
    let out = run_stdin(script, &[], "warn");
    out.expect_code(2);
    assert_err_line(
        &out,
        &[
            "line 4, column 9:",
            r"expected valid UTF-8 text, found the bytes `\xFF`",
        ],
    );
    assert_eq!(out.stdout, "\"v\"\n");
}

#[test]
fn removing_an_unknown_node_fails_with_exit_1() {
    let script = "add_node(n1)\nput(k, v)\nget(k)\nremove_node(ghost)\nget(k)\nput(k2, v2)\n";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(1);
    assert_err_line(
        &out,
        &["line 4", "remove_node(ghost)", "`ghost`", "not in the ring"],
    );
    assert_eq!(out.stdout, "\"v\"\n");
}

#[test]
fn adding_an_existing_node_fails_with_exit_1() {
    let script = "add_node(n1)\nadd_node(n2)\nput(k, v)\nget(k)\nadd_node(n2, weight=3)\nget(k)\n";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(1);
    assert_err_line(&out, &["line 5", "`n2`", "already in the ring"]);
    assert_eq!(out.stdout, "\"v\"\n");
}

#[test]
fn removing_the_last_node_holding_data_fails_with_exit_1() {
    let script = "add_node(n1)\nput(k, v)\nget(k)\nremove_node(n1)\nget(k)\n";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(1);
    assert_err_line(
        &out,
        &["line 4", "`n1`", "last node", "still holds 1 key(s)"],
    );
    assert_eq!(out.stdout, "\"v\"\n");

    // Kept going, the node and its data are still there.
    let out = run_stdin(script, &["--keep-going"], "warn");
    out.expect_code(1);
    assert_eq!(out.stdout, "\"v\"\n\"v\"\n");
}

#[test]
fn removing_the_last_node_without_data_is_fine() {
    let script =
        "add_node(n1)\nput(k, v)\ndelete(k)\nremove_node(n1)\nadd_node(n2)\nget(k)\nstats()\n";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    let lines = out.out_lines();
    assert_eq!(lines[0], "None");
    let stats = parse_stats(lines[1]);
    assert_eq!(stats.keys, 0);
    assert_eq!(stats.nodes.keys().collect::<Vec<_>>(), ["n2"]);
}

/// Every bad line and failed operation is reported, later lines still run,
/// and no data is lost.
#[test]
fn keep_going_reports_everything_and_loses_nothing() {
    let script = "\
add_node(n1)
add_node(n2)
put(k1, v1)
put(k2, v2)
put(k3 v3)
remove_node(ghost)
get(k1)
add_node(n1)
frobnicate(k1)
put(k4, v4)
remove_node(n2)
remove_node(n1)
get(k2)
get(k4)
stats()
";
    let out = run_stdin(script, &["--keep-going"], "warn");
    out.expect_code(2);
    assert_err_line(&out, &["line 5, column 8:", "expected `,` or `)`"]);
    assert_err_line(&out, &["line 6:", "remove_node(ghost)", "not in the ring"]);
    assert_err_line(&out, &["line 8:", "add_node(n1)", "already in the ring"]);
    assert_err_line(&out, &["line 9, column 1:", "expected an operation name"]);
    assert_err_line(&out, &["line 12:", "remove_node(n1)", "last node"]);
    assert_err_line(
        &out,
        &["errors: 2 line(s) did not parse, 3 operation(s) failed"],
    );
    let errors = out
        .err_lines()
        .iter()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(
        errors, 5,
        "one error line per failure; stderr:\n{}",
        out.stderr
    );

    let lines = out.out_lines();
    assert_eq!(lines[..3], [r#""v1""#, r#""v2""#, r#""v4""#]);
    let stats = parse_stats(lines[3]);
    assert_eq!(stats.keys, 3, "k1, k2 and k4 are all still stored");
    assert_eq!(stats.nodes.keys().collect::<Vec<_>>(), ["n1"]);
    assert_eq!(lines.len(), 4);
}

#[test]
fn keep_going_with_only_failed_operations_exits_1() {
    let script = "add_node(n1)\nput(k, v)\nremove_node(ghost)\nadd_node(n1)\nget(k)\n";
    let out = run_stdin(script, &["--keep-going"], "warn");
    out.expect_code(1);
    assert_err_line(
        &out,
        &["errors: 0 line(s) did not parse, 2 operation(s) failed"],
    );
    assert_eq!(out.stdout, "\"v\"\n");
}

#[test]
fn keep_going_with_only_syntax_errors_exits_2() {
    let script = "add_node(n1)\nput(k, v)\nput(\nget(k)\n";
    let out = run_stdin(script, &["--keep-going"], "warn");
    out.expect_code(2);
    assert_err_line(
        &out,
        &["errors: 1 line(s) did not parse, 0 operation(s) failed"],
    );
    assert_eq!(out.stdout, "\"v\"\n");
}

#[test]
fn an_operation_before_any_node_fails() {
    let out = run_stdin("get(k)\nadd_node(n1)\n", &[], "warn");
    out.expect_code(1);
    assert_err_line(&out, &["line 1:", "no nodes"]);
    assert_eq!(out.stdout, "");
}

#[test]
fn an_unterminated_block_is_a_syntax_error() {
    let script =
        "add_node(n1)\nput(k, v)\nget(k)\nconcurrently {\n    get(k)\n    put(k2, v2); get(k2)\n";
    for args in [&[][..], &["--keep-going"][..]] {
        let out = run_stdin(script, args, "warn");
        out.expect_code(2);
        assert_err_line(
            &out,
            &[
                "line 4, column 1:",
                "unterminated `concurrently` block opened on line 4",
                "expected `}`",
            ],
        );
        // The block never ran: only the get before it printed.
        assert_eq!(out.stdout, "\"v\"\n", "args {args:?}");
    }
}

#[test]
fn a_bad_lane_abandons_its_block_and_keep_going_resumes_after_it() {
    let script = "\
add_node(n1)
put(k, v)
concurrently {
    put(k, changed); get(k)
    put(k2 v2)
}
get(k)
";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(2);
    assert_err_line(&out, &["line 5, column 12:", "expected `,` or `)`"]);
    assert_eq!(out.stdout, "");

    let out = run_stdin(script, &["--keep-going"], "warn");
    out.expect_code(2);
    assert_eq!(out.stdout, "\"v\"\n", "no lane of the bad block ran");
}

#[test]
fn a_missing_script_file_fails_clearly() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-dir/missing.ops");
    let out = outcome(ringkv().arg("run").arg(&path).env("RUST_LOG", "warn"));
    assert_ne!(out.code, Some(0));
    assert!(out.code.is_some(), "exits rather than crashing");
    assert_err_line(&out, &["cannot open script", "missing.ops"]);
    assert_eq!(out.stdout, "");
}

#[test]
fn a_directory_as_script_fails_clearly() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = outcome(ringkv().arg("run").arg(&dir).env("RUST_LOG", "warn"));
    out.expect_code(1);
    assert_err_line(&out, &["error:", "error reading the script"]);
    assert_eq!(out.stdout, "");
}

#[test]
fn a_script_file_with_an_error_names_its_line() {
    let path = script_file(
        "file-error",
        "add_node(n1)\nput(k, v)\nget(k)\n\n# comment\nremove_node(n7)\nget(k)\n",
    );
    let out = outcome(ringkv().arg("run").arg(&path).env("RUST_LOG", "warn"));
    out.expect_code(1);
    assert_err_line(&out, &["line 6:", "`n7`"]);
    assert_eq!(out.stdout, "\"v\"\n");
}

#[test]
fn bad_options_are_usage_errors() {
    let out = outcome(
        ringkv()
            .args(["run", "--vnodes", "many", "-"])
            .write_stdin(""),
    );
    out.expect_code(2);
    assert!(out.stderr.contains("--vnodes"), "stderr:\n{}", out.stderr);

    let out = outcome(
        ringkv()
            .args(["run", "--placement", "random", "--vnodes", "0", "-"])
            .write_stdin("add_node(n1)\n"),
    );
    out.expect_code(1);
    assert!(out.stderr.contains("vnodes"), "stderr:\n{}", out.stderr);

    let out = outcome(
        ringkv()
            .args(["run", "--partitions", "1000", "-"])
            .write_stdin("add_node(n1)\n"),
    );
    out.expect_code(1);
    assert!(out.stderr.contains("partition"), "stderr:\n{}", out.stderr);

    let out = outcome(
        ringkv()
            .args(["run", "--nodes", "a,a", "-"])
            .env("RUST_LOG", "warn")
            .write_stdin(""),
    );
    out.expect_code(1);
    assert_err_line(&out, &["--nodes", "`a`", "already in the ring"]);
}

#[test]
fn node_ids_with_control_characters_are_refused_and_change_nothing() {
    // A CR/LF in an id would forge log lines; a NUL is no name at all.
    for bad in [r#""n4\x0d\nrebalance done""#, r#""n\x004""#, r#""n 4""#] {
        let script = format!("add_node(n1)\nput(k, v)\nadd_node({bad})\nstats()\nget(k)\n");
        let out = run_stdin(script, &["--keep-going"], "warn");
        assert_eq!(out.code, Some(1), "{bad}: stderr:\n{}", out.stderr);
        assert_err_line(&out, &["line 3", "node id", "ASCII letters, digits"]);
        assert!(
            !out.stderr.contains("\nrebalance done"),
            "the id's line break reached the log: {}",
            out.stderr
        );
        assert!(
            out.stdout.contains(r#""nodes":{"n1":1}"#),
            "{bad}: membership changed: {}",
            out.stdout
        );
        assert!(out.stdout.ends_with("\"v\"\n"), "{}", out.stdout);
    }
}
