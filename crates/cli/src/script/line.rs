//! Reading one line in bounded memory.

use std::io::{self, BufRead};

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineRead {
    /// The input ended before any byte of a new line.
    Eof,
    /// A whole line (with its `\n`, unless it is the last line) is in the buffer.
    Complete,
    /// The line is longer than the cap: the buffer holds its first `max`
    /// bytes, and the rest of the line has not been read yet.
    TooLong,
}

/// Reads the next line into `buf` (cleared first), storing at most `max`
/// bytes: unlike [`BufRead::read_until`], a line with no end never grows
/// `buf` past `max`.
pub(super) fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Complete
            });
        }
        let (len, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = max - buf.len();
        if len > room {
            buf.extend_from_slice(&available[..room]);
            reader.consume(room);
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(&available[..len]);
        reader.consume(len);
        if ends {
            return Ok(LineRead::Complete);
        }
    }
}

/// Skips the rest of the current line, its `\n` included, without storing
/// it. Returns the number of bytes skipped.
pub(super) fn skip_line(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(skipped);
        }
        let (len, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        reader.consume(len);
        skipped += len as u64;
        if ends {
            return Ok(skipped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn lines(input: &[u8], max: usize) -> Vec<(LineRead, Vec<u8>)> {
        // A tiny buffer, so that lines span several `fill_buf` calls.
        let mut reader = io::BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let read = read_line(&mut reader, &mut buf, max).unwrap();
            out.push((read, buf.clone()));
            match read {
                LineRead::Eof => return out,
                LineRead::TooLong => {
                    skip_line(&mut reader).unwrap();
                }
                LineRead::Complete => {}
            }
        }
    }

    #[test]
    fn lines_up_to_the_cap_and_past_it() {
        use LineRead::*;
        let got = lines(b"abc\nabcd\nabcdefgh\nab", 5);
        let want: Vec<(LineRead, &[u8])> = vec![
            (Complete, b"abc\n"),
            (Complete, b"abcd\n"),
            (TooLong, b"abcde"),
            (Complete, b"ab"),
            (Eof, b""),
        ];
        let want: Vec<(LineRead, Vec<u8>)> =
            want.into_iter().map(|(r, b)| (r, b.to_vec())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_without_end_stays_within_the_cap() {
        let mut reader = io::BufReader::new(io::repeat(0).take(10 << 20));
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 1000).unwrap(),
            LineRead::TooLong
        );
        assert_eq!(buf.len(), 1000);
        assert!(buf.capacity() < 64 << 10, "capacity {}", buf.capacity());
        assert_eq!(skip_line(&mut reader).unwrap(), (10 << 20) - 1000);
        assert_eq!(
            read_line(&mut reader, &mut buf, 1000).unwrap(),
            LineRead::Eof
        );
    }
}
