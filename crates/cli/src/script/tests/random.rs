//! Random and adversarial input: never a panic, and escapes round-trip.

use super::*;
use proptest::prelude::*;

/// A small grammar-aware generator of script text, for the never-panic
/// property: valid tokens, quotes, escapes, braces and random bytes.
fn random_script(rng: &mut impl rand::Rng) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "add_node",
        "remove_node",
        "put",
        "get",
        "delete",
        "stats",
        "crash",
        "heal",
        "fail",
        "resume",
        "before_copy",
        "mid_copy",
        "before_switch",
        "cleanup",
        "times",
        "force",
        "true",
        "concurrently",
        "weight",
        "(",
        ")",
        ",",
        ";",
        "=",
        "{",
        "}",
        "#",
        "\"",
        "\\",
        "\\\\",
        "\\\"",
        "\\n",
        "\\t",
        "\\x",
        "\\xf",
        "\\xff",
        "\\q",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\n",
        "0",
        "1",
        "4294967296",
        "key",
        "ключ",
        "é",
        "\u{85}",
        "\u{2028}",
        "\u{a0}",
        "put(a, b)",
        "get(\"k\")",
        "concurrently {\n",
        "\n}\n",
        "add_node(n, weight=2)",
        "fail(n, mid_copy, times=2)",
        "remove_node(n, force=true)",
    ];
    let len = rng.random_range(0..40);
    let mut out = Vec::new();
    for _ in 0..len {
        match rng.random_range(0..10) {
            0 => out.push(rng.random()),
            1 => {
                let n = rng.random_range(0..3);
                for _ in 0..n {
                    out.push(rng.random_range(0x80..=0xff));
                }
            }
            _ => out.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())].as_bytes()),
        }
    }
    out
}

/// Runs every input through every entry point; panics only on a bug.
fn exercise(input: &[u8]) {
    for item in ScriptReader::new(input) {
        if let Err(e) = item {
            let _ = e.to_string();
        }
    }
    let text = String::from_utf8_lossy(input);
    for line in text.lines() {
        if let Ok(Some(op)) = parse_line(line, 1) {
            assert_eq!(parse_line(&op.to_string(), 1), Ok(Some(op)));
        }
    }
    let round_trip = parse_line(&format!("put({}, \"\")", escape(input)), 1);
    assert_eq!(
        round_trip,
        Ok(Some(Op::Put {
            key: input.to_vec(),
            value: Vec::new()
        }))
    );
}

fn random_inputs(seed: u64, count: u64) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    for i in 0..count {
        let input = random_script(&mut rng);
        let caught = std::panic::catch_unwind(|| exercise(&input));
        if caught.is_err() {
            panic!(
                "seed {seed}, input #{i} panicked: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[test]
fn random_inputs_quick() {
    random_inputs(0x5eed, 5_000);
}

/// The std-only stand-in for the cargo-fuzz target. Run with
/// `cargo test -p ringkv-cli --lib --release -- --ignored --nocapture fuzz_stand_in`;
/// `RINGKV_FUZZ_SEED` and `RINGKV_FUZZ_ITERATIONS` override the defaults.
#[test]
#[ignore = "long: millions of random inputs"]
fn fuzz_stand_in() {
    let seed = std::env::var("RINGKV_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let count = std::env::var("RINGKV_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    println!("fuzz_stand_in: seed {seed} (RINGKV_FUZZ_SEED={seed} to replay), {count} inputs");
    random_inputs(seed, count);
}

proptest! {
    #[test]
    fn escape_round_trips_through_put(
        key in proptest::collection::vec(any::<u8>(), 0..64),
        value in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let line = format!("put({}, {})", escape(&key), escape(&value));
        prop_assert_eq!(parse_line(&line, 1), Ok(Some(Op::Put { key, value })));
    }

    #[test]
    fn escape_round_trips_text(key in ".*", value in "\\PC*") {
        let line = format!("put({}, {})", escape(key.as_bytes()), escape(value.as_bytes()));
        prop_assert_eq!(
            parse_line(&line, 1),
            Ok(Some(Op::Put { key: key.into_bytes(), value: value.into_bytes() }))
        );
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".*") {
        let _ = parse_line(&s, 1);
        for item in ScriptReader::new(s.as_bytes()) {
            let _ = item;
        }
    }

    #[test]
    fn grammar_like_strings_never_panic(
        s in r##"([a-z_]{0,12}|[(){};,="#\\ \t\n]|\\x[0-9a-fg]{0,2}|[é€\u{85}]){0,30}"##
    ) {
        let _ = parse_line(&s, 1);
        for item in ScriptReader::new(s.as_bytes()) {
            let _ = item;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for item in ScriptReader::new(&bytes[..]) {
            let _ = item;
        }
    }
}
