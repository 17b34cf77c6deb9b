//! Single lines: every operation, quoting, comments, weights, errors.

use super::*;

#[test]
fn every_op() {
    assert_eq!(
        op("add_node(node4)"),
        Op::AddNode {
            id: "node4".into(),
            weight: None
        }
    );
    assert_eq!(
        op("add_node(node5, weight=2)"),
        Op::AddNode {
            id: "node5".into(),
            weight: Some(2)
        }
    );
    assert_eq!(
        op("remove_node(node2)"),
        Op::RemoveNode {
            id: "node2".into(),
            force: false
        }
    );
    assert_eq!(op("put(key1, value1)"), put("key1", "value1"));
    assert_eq!(op("get(key1)"), get("key1"));
    assert_eq!(
        op("delete(key1)"),
        Op::Delete {
            key: b"key1".to_vec()
        }
    );
    assert_eq!(op("stats()"), Op::Stats);
    assert_eq!(op("stats( )"), Op::Stats);
}

#[test]
fn quoting_and_escapes() {
    assert_eq!(
        op(r#"put("a key", "a value, with a comma")"#),
        put("a key", "a value, with a comma")
    );
    assert_eq!(
        op(r#"put("q\"b\\s", "l1\nl2\tt")"#),
        put("q\"b\\s", "l1\nl2\tt")
    );
    assert_eq!(
        op(r#"put("\xff\x00\x41", "")"#),
        Op::Put {
            key: vec![0xff, 0, b'A'],
            value: vec![]
        }
    );
    assert_eq!(op(r#"put("", "")"#), put("", ""));
    assert_eq!(op("put(ключ, 値)"), put("ключ", "値"));
    assert_eq!(
        op(r#"put("ключ", "a(b)c{d};e=f")"#),
        put("ключ", "a(b)c{d};e=f")
    );
    assert_eq!(
        op(r"put(a\b, c)"),
        put(r"a\b", "c"),
        "backslash in a bare word"
    );
    assert_eq!(
        op(r#"add_node("node 7", weight=3)"#),
        Op::AddNode {
            id: "node 7".into(),
            weight: Some(3)
        }
    );
    assert_eq!(
        op("remove_node(\"n\")"),
        Op::RemoveNode {
            id: "n".into(),
            force: false
        }
    );
}

#[test]
fn comments_and_whitespace() {
    assert_eq!(parse_line("", 1), Ok(None));
    assert_eq!(parse_line("   \t ", 1), Ok(None));
    assert_eq!(parse_line("# just a comment", 1), Ok(None));
    assert_eq!(parse_line("   # indented comment", 1), Ok(None));
    assert_eq!(op("get(k) # trailing comment"), get("k"));
    assert_eq!(op("get(k)#tight"), get("k"));
    assert_eq!(
        op(r##"put("a # b", "#")  # real comment"##),
        put("a # b", "#")
    );
    assert_eq!(op("  put( a , b )  "), put("a", "b"));
    assert_eq!(op("\tput(\ta,\tb\t)\t"), put("a", "b"));
    assert_eq!(op("put(a,b)"), put("a", "b"));
    assert_eq!(op("put (a, b)"), put("a", "b"));
    assert_eq!(
        op("add_node( n , weight = 4 )"),
        Op::AddNode {
            id: "n".into(),
            weight: Some(4)
        }
    );
}

#[test]
fn weights() {
    let w = |s: &str| match op(s) {
        Op::AddNode { weight, .. } => weight,
        o => panic!("{o:?}"),
    };
    assert_eq!(w("add_node(n, weight=1)"), Some(1));
    assert_eq!(w("add_node(n, weight=007)"), Some(7));
    assert_eq!(w("add_node(n, weight=4294967295)"), Some(u32::MAX));
    let range = "expected a weight that is an integer from 1 to 4294967295";
    check_err("add_node(n, weight=0)", 20, &format!("{range}, found `0`"));
    check_err(
        "add_node(n, weight=4294967296)",
        20,
        &format!("{range}, found `4294967296`"),
    );
    check_err(
        "add_node(n, weight=-1)",
        20,
        &format!("{range}, found `-1`"),
    );
    check_err(
        "add_node(n, weight=+1)",
        20,
        &format!("{range}, found `+1`"),
    );
    check_err(
        "add_node(n, weight=two)",
        20,
        &format!("{range}, found `two`"),
    );
    check_err(
        r#"add_node(n, weight="2")"#,
        20,
        &format!("{range}, found `\"2\"`"),
    );
    check_err("add_node(n, 2)", 13, "expected `weight=N`, found `2`");
    check_err(
        "add_node(n, wait=2)",
        13,
        "expected `weight=N`, found `wait=2`",
    );
    check_err(
        "add_node(n, weight=)",
        20,
        "expected a value after `weight=`, found `)`",
    );
    check_err(
        "add_node(weight=2)",
        10,
        "expected a positional argument for add_node(id, weight=N), found `weight=`",
    );
    check_err(
        "add_node(n, weight=2, weight=3)",
        23,
        "expected 1 or 2 arguments for add_node(id, weight=N), found 3",
    );
    check_err(
        "put(k=1, v)",
        5,
        "expected a positional argument for put(key, value), found `k=`",
    );
}

#[test]
fn syntax_errors_with_positions() {
    check_err(
        "pt(a, b)",
        1,
        "expected an operation name (add_node, remove_node, put, get, delete, stats, crash, heal, fail, resume), found `pt`",
    );
    check_err(
        "  (a)",
        3,
        "expected an operation name (add_node, remove_node, put, get, delete, stats, crash, heal, fail, resume), found `(`",
    );
    check_err("put a, b", 5, "expected `(` after `put`, found `a`");
    check_err("get", 4, "expected `(` after `get`, found end of line");
    check_err(
        "put(key1)",
        9,
        "expected 2 arguments for put(key, value), found 1",
    );
    check_err(
        "put(a, b, c)",
        11,
        "expected 2 arguments for put(key, value), found 3",
    );
    check_err("get()", 5, "expected 1 argument for get(key), found 0");
    check_err(
        "delete(a, b)",
        11,
        "expected 1 argument for delete(key), found 2",
    );
    check_err(
        "remove_node()",
        13,
        "expected 1 or 2 arguments for remove_node(id, force=true), found 0",
    );
    check_err("stats(x)", 7, "expected no arguments for stats(), found 1");
    check_err(
        "add_node()",
        10,
        "expected 1 or 2 arguments for add_node(id, weight=N), found 0",
    );
    check_err("put(a b)", 7, "expected `,` or `)`, found `b`");
    check_err("put(a, b", 9, "expected `,` or `)`, found end of line");
    check_err(
        "put(a, b # c)",
        10,
        "expected `,` or `)`, found end of line",
    );
    check_err(
        "put(a, )",
        8,
        "expected an argument (a bare word or a \"quoted string\"), found `)`",
    );
    check_err(
        "put(,a)",
        5,
        "expected an argument (a bare word or a \"quoted string\"), found `,`",
    );
    check_err("put(a, b) x", 11, "expected end of line, found `x`");
    check_err("put(a, b))", 10, "expected end of line, found `)`");
    check_err(
        r#"put(a, "b) "#,
        8,
        "unterminated string starting at column 8",
    );
    check_err(
        r#"get("abc\"#,
        5,
        "unterminated string starting at column 5",
    );
    check_err(
        r#"get("a\qb")"#,
        7,
        r#"unknown escape `\q` (the escapes are \\, \", \n, \t and \xHH)"#,
    );
    check_err(
        r#"get("\xg1")"#,
        6,
        r"expected two hex digits after `\x`, found `\xg`",
    );
    check_err(
        r#"get("\x1")"#,
        6,
        r#"expected two hex digits after `\x`, found `\x1"`"#,
    );
    check_err(r#"get("\x"#, 5, "unterminated string starting at column 5");
    check_err(
        r#"remove_node("")"#,
        13,
        r#"expected a non-empty node id, found `""`"#,
    );
    check_err(
        r#"add_node("\xff")"#,
        10,
        r#"expected a node id that is valid UTF-8, found `"\xff"`"#,
    );
    // Columns count characters, not bytes.
    check_err(
        "put(ключ значение)",
        10,
        "expected `,` or `)`, found `значение`",
    );
    // Long offending text is cut short.
    let long = "x".repeat(100);
    let e = err(&format!("{long}()"));
    assert!(
        e.to_string()
            .ends_with(&format!("found `{}…`", "x".repeat(40))),
        "{e}"
    );
}

#[test]
fn semicolons_outside_blocks() {
    let semi = "expected end of line (`;` separates operations only inside a `concurrently` block), found `;`";
    check_err("put(a, b);", 10, semi);
    check_err("put(a, b); get(a)", 10, semi);
    check_err(
        ";",
        1,
        "expected an operation name (add_node, remove_node, put, get, delete, stats, crash, heal, fail, resume), found `;`",
    );
    check_err(
        "concurrently {",
        1,
        "expected a single operation (`concurrently` blocks need a whole script), found `concurrently`",
    );
}

#[test]
fn display_round_trips() {
    for line in [
        "add_node(node4)",
        "add_node(node5, weight=2)",
        r#"add_node("node 5", weight=2)"#,
        "remove_node(n)",
        r#"put("k", "v\n\"\\\xFF")"#,
        r#"get("")"#,
        r#"delete("x")"#,
        "stats()",
    ] {
        let o = op(line);
        assert_eq!(o.to_string(), line);
        assert_eq!(op(&o.to_string()), o);
    }
    assert_eq!(op("put(k, v)").name(), "put");
}

#[test]
fn escape_output() {
    assert_eq!(escape(b""), r#""""#);
    assert_eq!(escape(b"plain text"), r#""plain text""#);
    assert_eq!(escape(b"a\"b\\c\nd\te"), r#""a\"b\\c\nd\te""#);
    assert_eq!(escape(b"\x00\r\x7f"), r#""\x00\x0D\x7F""#);
    assert_eq!(escape(&[0xff, b'a', 0xc3]), r#""\xFFa\xC3""#);
    assert_eq!(escape("é€".as_bytes()), "\"é€\"");
    assert_eq!(escape("\u{85}".as_bytes()), r#""\xC2\x85""#);
}

#[test]
fn failure_ops() {
    assert_eq!(op("crash(node1)"), Op::Crash { id: "node1".into() });
    assert_eq!(op("heal(\"n 1\")"), Op::Heal { id: "n 1".into() });
    assert_eq!(op("resume()"), Op::Resume);
    for point in FailPoint::ALL {
        assert_eq!(
            op(&format!("fail(n2, {})", point.name())),
            Op::Fail {
                id: "n2".into(),
                point,
                times: None
            }
        );
    }
    assert_eq!(
        op("fail(n2, before_switch, times=3)"),
        Op::Fail {
            id: "n2".into(),
            point: FailPoint::BeforeSwitch,
            times: Some(3)
        }
    );
    assert_eq!(
        op("remove_node(n2, force=true)"),
        Op::RemoveNode {
            id: "n2".into(),
            force: true
        }
    );
    assert_eq!(
        op("remove_node(n2, force=false)"),
        Op::RemoveNode {
            id: "n2".into(),
            force: false
        }
    );
    check_err(
        "fail(n2, \"mid_copy\")",
        10,
        "expected a failure point (before_copy, mid_copy, before_switch, cleanup), found `\"mid_copy\"`",
    );
    check_err(
        "fail(n2, point=mid_copy)",
        10,
        "expected a positional argument for fail(id, point, times=N), found `point=`",
    );
    check_err("fail(n2, cleanup, 3)", 19, "expected `times=N`, found `3`");
    check_err(
        "fail(n2, cleanup, count=3)",
        19,
        "expected `times=N`, found `count=3`",
    );
    check_err(
        "fail(n2, cleanup, times=-1)",
        25,
        "expected a times that is an integer from 1 to 4294967295, found `-1`",
    );
    check_err(
        "fail(n2)",
        8,
        "expected 2 or 3 arguments for fail(id, point, times=N), found 1",
    );
    check_err(
        "remove_node(n2, true)",
        17,
        "expected `force=true` or `force=false`, found `true`",
    );
    check_err(
        "remove_node(n2, force=1)",
        23,
        "expected `true` or `false`, found `1`",
    );
    check_err(
        "resume(now)",
        8,
        "expected no arguments for resume(), found 1",
    );
    for line in [
        "crash(n1)",
        "heal(n1)",
        "resume()",
        "fail(n1, mid_copy)",
        "fail(\"n 1\", cleanup, times=7)",
        "remove_node(n1, force=true)",
        "remove_node(n1)",
    ] {
        let parsed = op(line);
        assert_eq!(parsed.to_string(), line);
        assert_eq!(op(&parsed.to_string()), parsed);
    }
}
