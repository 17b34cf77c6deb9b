//! Redis's glob-style patterns (`stringmatchlen` in Redis's `util.c`), in
//! time linear in the text for a given pattern: every place the server
//! matches a client's pattern (`CONFIG GET`, and `KEYS` / `SCAN MATCH` when
//! they come) goes through [`Pattern`].
//!
//! Redis matches by recursion: each `*` tries every suffix of the text, so
//! `*a*a*a*b` against a long run of `a` backtracks without end and a long
//! run of `*` overflows the stack. Here the pattern is first compiled into
//! tokens (runs of `*` become one; each class becomes a 256-bit set), then
//! matched with one backtrack point, the last `*` seen. That is enough
//! because every token but `*` consumes exactly one byte: when the part
//! after a later `*` fails, stretching an earlier `*` cannot help. A match
//! costs at most (tokens + 1) x (text length + 1) steps, and the pattern is
//! capped at [`MAX_PATTERN_LEN`] bytes.
//!
//! Semantics are Redis's, quirks included:
//! - `*` any run of bytes, `?` any one byte, `\x` the byte `x`;
//! - `[abc]`, `[a-z]` (bounds in either order), `[^...]` negated, `\x`
//!   inside a class is `x`; a `]` right after `[` closes an empty class; a
//!   class never closed takes the rest of the pattern as its members;
//! - with `nocase`, bytes compare ASCII case-insensitively, except an
//!   escaped byte inside a class (as in Redis);
//! - the empty text is matched by the empty pattern only (`*` does not
//!   match it: Redis's loop stops before looking at the pattern).
//!
//! One deliberate difference: Redis gives up (no match) past 1000 nested
//! `*` recursions; this matcher has no such depth and answers exactly.

/// Longest pattern accepted, in bytes. Longer ones are refused with
/// [`PatternTooLong`], which bounds both the compiled pattern's memory and
/// the work of one match.
pub const MAX_PATTERN_LEN: usize = 64 * 1024;

/// A pattern longer than [`MAX_PATTERN_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern of {len} bytes is too long: at most {MAX_PATTERN_LEN} bytes are allowed")]
pub struct PatternTooLong {
    /// The pattern's length.
    pub len: usize,
}

/// One compiled element of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*` (a run of them).
    Star,
    /// `?`.
    Any,
    /// A literal byte (escaped or not).
    Byte(u8),
    /// `[...]`: the index of its set in `Pattern::classes`.
    Class(usize),
}

/// A compiled glob pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    tokens: Vec<Token>,
    /// One 256-bit membership set per class, indexed by the raw byte.
    classes: Vec<[u64; 4]>,
    nocase: bool,
}

impl Pattern {
    /// Compiles `pattern`; with `nocase`, ASCII letters match either case.
    pub fn new(pattern: &[u8], nocase: bool) -> Result<Pattern, PatternTooLong> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternTooLong { len: pattern.len() });
        }
        let mut tokens = Vec::new();
        let mut classes = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            match pattern[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                b'?' => tokens.push(Token::Any),
                b'[' => {
                    let (set, end) = class(pattern, i + 1, nocase);
                    classes.push(set);
                    tokens.push(Token::Class(classes.len() - 1));
                    i = end;
                }
                b'\\' if i + 1 < pattern.len() => {
                    i += 1;
                    tokens.push(Token::Byte(pattern[i]));
                }
                byte => tokens.push(Token::Byte(byte)),
            }
            i += 1;
        }
        Ok(Pattern {
            tokens,
            classes,
            nocase,
        })
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &[u8]) -> bool {
        self.matches_counting(text, &mut 0)
    }

    /// [`Pattern::matches`], adding the steps taken to `steps`.
    fn matches_counting(&self, text: &[u8], steps: &mut u64) -> bool {
        if text.is_empty() {
            return self.tokens.is_empty();
        }
        let tokens = &self.tokens;
        let (mut p, mut t) = (0, 0);
        // After the last `*` seen: the token that follows it, and the text
        // position that `*` has stretched to.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            *steps += 1;
            match tokens.get(p) {
                Some(Token::Star) => {
                    if p + 1 == tokens.len() {
                        return true;
                    }
                    star = Some((p + 1, t));
                    p += 1;
                }
                Some(&token) if self.token_matches(token, text[t]) => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((after, stretched)) => {
                        star = Some((after, stretched + 1));
                        p = after;
                        t = stretched + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|&token| token == Token::Star)
    }

    fn token_matches(&self, token: Token, byte: u8) -> bool {
        match token {
            Token::Star | Token::Any => true,
            Token::Byte(b) if self.nocase => b.eq_ignore_ascii_case(&byte),
            Token::Byte(b) => b == byte,
            Token::Class(i) => contains(&self.classes[i], byte),
        }
    }
}

fn contains(set: &[u64; 4], byte: u8) -> bool {
    set[usize::from(byte / 64)] & (1 << (byte % 64)) != 0
}

fn insert(set: &mut [u64; 4], byte: u8) {
    set[usize::from(byte / 64)] |= 1 << (byte % 64);
}

/// Compiles the class whose members start at `start` (just after `[`), as
/// Redis reads it. Returns its set of matching bytes and the index of its
/// closing `]` (or of the pattern's last byte when it is never closed).
fn class(pattern: &[u8], start: usize, nocase: bool) -> ([u64; 4], usize) {
    let mut set = [0u64; 4];
    let mut i = start;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let lower = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let end = loop {
        let Some(&member) = pattern.get(i) else {
            // Never closed: the class ends with the pattern.
            break pattern.len() - 1;
        };
        let left = pattern.len() - i;
        if member == b'\\' && left >= 2 {
            // Escaped: compared as is, even with nocase (as Redis does).
            i += 1;
            insert(&mut set, pattern[i]);
        } else if member == b']' {
            break i;
        } else if left >= 3 && pattern[i + 1] == b'-' {
            let (mut lo, mut hi) = (member, pattern[i + 2]);
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            let (lo, hi) = (lower(lo), lower(hi));
            for byte in 0..=u8::MAX {
                if (lo..=hi).contains(&lower(byte)) {
                    insert(&mut set, byte);
                }
            }
            i += 2;
        } else {
            insert(&mut set, member);
            if nocase {
                insert(&mut set, member.to_ascii_lowercase());
                insert(&mut set, member.to_ascii_uppercase());
            }
        }
        i += 1;
    };
    if negate {
        for word in &mut set {
            *word = !*word;
        }
    }
    (set, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str, text: &str) -> bool {
        Pattern::new(pattern.as_bytes(), false)
            .unwrap()
            .matches(text.as_bytes())
    }

    fn glob_nocase(pattern: &str, text: &str) -> bool {
        Pattern::new(pattern.as_bytes(), true)
            .unwrap()
            .matches(text.as_bytes())
    }

    /// A direct port of Redis 7's recursive `stringmatchlen`, to compare
    /// against on short inputs.
    fn redis(p: &[u8], s: &[u8], nocase: bool) -> bool {
        let (mut pi, mut si) = (0usize, 0usize);
        let eq = |a: u8, b: u8| {
            if nocase {
                a.eq_ignore_ascii_case(&b)
            } else {
                a == b
            }
        };
        while pi < p.len() && si < s.len() {
            match p[pi] {
                b'*' => {
                    while pi + 1 < p.len() && p[pi + 1] == b'*' {
                        pi += 1;
                    }
                    if p.len() - pi == 1 {
                        return true;
                    }
                    while si < s.len() {
                        if redis(&p[pi + 1..], &s[si..], nocase) {
                            return true;
                        }
                        si += 1;
                    }
                    return false;
                }
                b'?' => si += 1,
                b'[' => {
                    pi += 1;
                    let negate = pi < p.len() && p[pi] == b'^';
                    if negate {
                        pi += 1;
                    }
                    let mut matched = false;
                    loop {
                        if pi + 1 < p.len() && p[pi] == b'\\' {
                            pi += 1;
                            matched |= p[pi] == s[si];
                        } else if pi < p.len() && p[pi] == b']' {
                            break;
                        } else if pi >= p.len() {
                            pi -= 1;
                            break;
                        } else if p.len() - pi >= 3 && p[pi + 1] == b'-' {
                            let (mut lo, mut hi) = (p[pi], p[pi + 2]);
                            if lo > hi {
                                std::mem::swap(&mut lo, &mut hi);
                            }
                            let mut c = s[si];
                            if nocase {
                                lo = lo.to_ascii_lowercase();
                                hi = hi.to_ascii_lowercase();
                                c = c.to_ascii_lowercase();
                            }
                            pi += 2;
                            matched |= c >= lo && c <= hi;
                        } else {
                            matched |= eq(p[pi], s[si]);
                        }
                        pi += 1;
                    }
                    if negate {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    si += 1;
                }
                other => {
                    let literal = if other == b'\\' && p.len() - pi >= 2 {
                        pi += 1;
                        p[pi]
                    } else {
                        other
                    };
                    if !eq(literal, s[si]) {
                        return false;
                    }
                    si += 1;
                }
            }
            pi += 1;
            if si == s.len() {
                while pi < p.len() && p[pi] == b'*' {
                    pi += 1;
                }
                break;
            }
        }
        pi == p.len() && si == s.len()
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(glob("*", "save"));
        assert!(glob("max*", "maxclients"));
        assert!(glob("s?ve", "save"));
        assert!(glob("*a*", "banana"));
        assert!(glob("h*llo", "hllo"));
        assert!(glob("h*llo", "heeeello"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(glob("**a**", "a"));
        assert!(!glob("save", "saves"));
        assert!(!glob("x*", "save"));
        assert!(!glob("a*b", "acbd"));
        assert!(!glob("?", "ab"));
        assert!(!glob("*", ""), "Redis: only the empty pattern matches ''");
        assert!(glob("", ""));
        assert!(!glob("", "a"));
        assert!(glob("a*", "a"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        // The cases of Redis's KEYS documentation.
        assert!(glob("h[ae]llo", "hello"));
        assert!(glob("h[ae]llo", "hallo"));
        assert!(!glob("h[ae]llo", "hillo"));
        assert!(glob("h[^e]llo", "hallo"));
        assert!(!glob("h[^e]llo", "hello"));
        assert!(glob("h[a-b]llo", "hbllo"));
        assert!(!glob("h[a-b]llo", "hcllo"));
        assert!(glob("h[b-a]llo", "hallo"), "bounds in either order");
        assert!(glob(r"h\*llo", "h*llo"));
        assert!(!glob(r"h\*llo", "hello"));
        assert!(glob(r"a\?", "a?"));
        assert!(!glob(r"a\?", "ab"));
        assert!(glob(r"[\]]", "]"));
        assert!(glob(r"[\-]", "-"));
        assert!(glob(r"a\", r"a\"), "a trailing backslash is literal");
        // `]` right after `[` closes an empty class, which matches nothing.
        assert!(!glob("[]a", "a"));
        assert!(glob("[^]a", "xa"));
        // A class never closed takes the rest of the pattern.
        assert!(glob("[abc", "b"));
        assert!(!glob("[abc", "d"));
        assert!(glob("x[a-", "x-"), "`a-` then end: members a and -");
        // Redis reads `[a-]` as the range a..]
        assert!(glob("[a-]", "a"));
        assert!(glob("[a-]", "]"));
        assert!(glob("[a-]", "^"));
    }

    #[test]
    fn nocase_compares_ascii_letters_either_case() {
        assert!(glob_nocase("MAX*", "maxclients"));
        assert!(glob_nocase("[A-Z]ave", "save"));
        assert!(glob_nocase("[S]ave", "save"));
        assert!(!glob("[S]ave", "save"));
        // An escaped member of a class stays case-sensitive, as in Redis.
        assert!(!glob_nocase(r"[\S]ave", "save"));
        assert!(glob_nocase(r"\Save", "save"));
    }

    #[test]
    fn agrees_with_redis_recursive_matcher_on_every_small_case() {
        let alphabet: &[u8] = b"ab*?[]^-\\";
        let texts: &[&[u8]] = &[
            b"", b"a", b"b", b"ab", b"ba", b"aab", b"abab", b"]", b"-", b"^", b"*", b"a]b",
        ];
        let mut pattern = Vec::new();
        let mut checked = 0;
        // Every pattern of up to 4 bytes over the alphabet.
        for len in 0..=4u32 {
            for mut n in 0..alphabet.len().pow(len) {
                pattern.clear();
                for _ in 0..len {
                    pattern.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                for nocase in [false, true] {
                    let compiled = Pattern::new(&pattern, nocase).unwrap();
                    for &text in texts {
                        assert_eq!(
                            compiled.matches(text),
                            redis(&pattern, text, nocase),
                            "pattern {:?} text {:?} nocase {nocase}",
                            pattern.escape_ascii().to_string(),
                            text.escape_ascii().to_string(),
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn sixty_thousand_stars_match_without_recursion() {
        let stars = "*".repeat(60_000);
        let pattern = Pattern::new(stars.as_bytes(), false).unwrap();
        assert!(pattern.matches(b"maxclients"));
        let text = "a".repeat(100_000);
        assert!(pattern.matches(text.as_bytes()));
    }

    #[test]
    fn backtracking_patterns_cost_linear_steps() {
        let text = vec![b'a'; 100_000];
        let pattern = format!("{}x", "*".repeat(30));
        let compiled = Pattern::new(pattern.as_bytes(), false).unwrap();
        let mut steps = 0;
        assert!(!compiled.matches_counting(&text, &mut steps));
        // Stars collapse to one, and the single backtrack point walks the
        // text once per token after it.
        assert!(steps <= 3 * text.len() as u64, "{steps} steps");

        // Redis's regression case: `a*` repeated, then `b`, against `a`s.
        let pattern = format!("{}b", "a*".repeat(50));
        let compiled = Pattern::new(pattern.as_bytes(), false).unwrap();
        let text = vec![b'a'; 10_000];
        let mut steps = 0;
        assert!(!compiled.matches_counting(&text, &mut steps));
        let bound = (compiled.tokens.len() as u64 + 1) * (text.len() as u64 + 1);
        assert!(steps <= bound, "{steps} steps over the bound {bound}");
    }

    #[test]
    fn a_pattern_over_the_cap_is_refused() {
        let long = vec![b'a'; MAX_PATTERN_LEN + 1];
        assert_eq!(
            Pattern::new(&long, false).unwrap_err(),
            PatternTooLong {
                len: MAX_PATTERN_LEN + 1
            }
        );
        assert!(Pattern::new(&long[..MAX_PATTERN_LEN], false).is_ok());
    }
}
