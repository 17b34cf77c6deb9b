//! How gets print values: quoted, escaped, and readable back by a script.

use ringkv_cli::script::{Op, parse_line};

use super::*;

/// `(value as written in the script, its bytes, how a get prints it)`.
const CASES: &[(&str, &[u8], &str)] = &[
    ("plain", b"plain", r#""plain""#),
    (r#""""#, b"", r#""""#),
    (r#""back\\slash""#, b"back\\slash", r#""back\\slash""#),
    (r#""say \"hi\"""#, b"say \"hi\"", r#""say \"hi\"""#),
    (
        r#""line1\nline2\tend""#,
        b"line1\nline2\tend",
        r#""line1\nline2\tend""#,
    ),
    (
        r#""\xff\xFE\x00A\x80""#,
        b"\xff\xfe\x00A\x80",
        r#""\xFF\xFE\x00A\x80""#,
    ),
    (
        r#""cr\x0d del\x7f""#,
        b"cr\r del\x7f",
        r#""cr\x0D del\x7F""#,
    ),
    // Valid UTF-8 written as bytes prints as text.
    (r#""caf\xC3\xA9""#, "café".as_bytes(), r#""café""#),
    (
        r#""значение ✓ 日本語""#,
        "значение ✓ 日本語".as_bytes(),
        r#""значение ✓ 日本語""#,
    ),
    (
        r#""a, b (c) # not a comment; {x=y}""#,
        b"a, b (c) # not a comment; {x=y}",
        r#""a, b (c) # not a comment; {x=y}""#,
    ),
    // A truncated UTF-8 sequence followed by text.
    (r#""\xC3a""#, b"\xc3a", r#""\xC3a""#),
];

/// The bytes a printed line stands for, read back with the script parser.
fn parse_printed(printed: &str) -> Vec<u8> {
    match parse_line(&format!("get({printed})"), 1) {
        Ok(Some(Op::Get { key })) => key,
        other => panic!("{printed} does not read back as a key: {other:?}"),
    }
}

#[test]
fn gets_print_escaped_values() {
    let mut script = String::from("add_node(n1)\nadd_node(n2)\n");
    for (i, (text, _, _)) in CASES.iter().enumerate() {
        script.push_str(&format!("put(k{i}, {text})\n"));
    }
    for i in 0..CASES.len() {
        script.push_str(&format!("get(k{i})\n"));
    }
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    let expected: Vec<&str> = CASES.iter().map(|c| c.2).collect();
    assert_eq!(out.out_lines(), expected);
    for (printed, (_, bytes, _)) in out.out_lines().iter().zip(CASES) {
        assert_eq!(parse_printed(printed), *bytes, "{printed} reads back");
    }
}

#[test]
fn keys_with_spaces_commas_and_escapes() {
    let script = r#"add_node(n1)
add_node(n2)
put("a key, with commas", v1)
put("tab\there", "v2")
put("", empty-key)
put("\xFF\x00", "binary key")
put(ключ, "unicode key")
get("a key, with commas")
get("tab\x09here")
get("")
get("\xff\x00")
get("ключ")
get("a key")
get("a key,")
delete("a key, with commas")
get("a key, with commas")
"#;
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    assert_eq!(
        out.out_lines(),
        [
            r#""v1""#,
            r#""v2""#,
            r#""empty-key""#,
            r#""binary key""#,
            r#""unicode key""#,
            "None",
            "None",
            "None",
        ]
    );
}

/// What a get prints can be pasted back into a script, as a value and as a
/// key, and prints the same again.
#[test]
fn printed_values_round_trip_through_a_second_script() {
    let mut first = String::from("add_node(n1)\nadd_node(n2)\nadd_node(n3)\n");
    for (i, (text, _, _)) in CASES.iter().enumerate() {
        first.push_str(&format!("put(k{i}, {text})\nget(k{i})\n"));
    }
    let out1 = run_stdin(first, &[], "warn");
    out1.expect_code(0);
    let printed = out1.out_lines();
    assert_eq!(printed.len(), CASES.len());

    let mut second = String::from("add_node(n1)\nadd_node(n2)\nadd_node(n3)\n");
    for (i, p) in printed.iter().enumerate() {
        second.push_str(&format!("put(r{i}, {p})\nget(r{i})\n"));
        // The printed form as a key, too (the empty value is a valid key).
        second.push_str(&format!("put({p}, x{i})\nget({p})\n"));
    }
    let out2 = run_stdin(second, &[], "warn");
    out2.expect_code(0);
    let mut expected = Vec::new();
    for (i, p) in printed.iter().enumerate() {
        expected.push(p.to_string());
        expected.push(format!("\"x{i}\""));
    }
    assert_eq!(out2.out_lines(), expected);

    // And the bytes are the ones first written, not just the same text.
    for (p, (_, bytes, _)) in printed.iter().zip(CASES) {
        assert_eq!(parse_printed(p), *bytes);
    }
}

#[test]
fn crlf_line_endings_comments_and_blank_lines() {
    let script = "# header\r\nadd_node(n1)   # first node\r\n\r\n   \r\nput(k, \"v # not a comment\")\r\nget(k)\r\nget(\"k\") # trailing\r\n";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    assert_eq!(
        out.out_lines(),
        [r#""v # not a comment""#, r#""v # not a comment""#]
    );
}

#[test]
fn overwrite_delete_and_missing_keys() {
    let script = "add_node(n1)\nget(k)\nput(k, a)\nput(k, b)\nget(k)\ndelete(k)\nget(k)\ndelete(k)\nput(k, c)\nget(k)\nstats()\n";
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    let lines = out.out_lines();
    assert_eq!(lines[..4], ["None", r#""b""#, "None", r#""c""#]);
    let stats = parse_stats(lines[4]);
    assert_eq!((stats.epoch, stats.keys), (1, 1));
    assert_eq!(lines.len(), 5);
}
