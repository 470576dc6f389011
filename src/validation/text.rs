//! A reader of JSON text that checks it is JSON as it goes, byte by byte, and notes
//! what storing it needs to know ([`Storable`]): the tokens the envelope's one pass
//! ([`super::envelope`]) and the payload's document ([`super::Payload::read`]) are
//! read with. Whatever it finds unusual it declines (`None`), and serde_json reads
//! the body instead, so it only has to be right about what it accepts: never JSON
//! that serde_json would refuse, and the same strings and numbers it would read.

use std::borrow::Cow;

use serde_json::Number;

/// What PostgreSQL's jsonb would make of a value's text, noted as it is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Storable {
    /// A string or key holds the escape `\u0000`: jsonb refuses U+0000, so the parsed
    /// value is searched for it (in JSON text a NUL can only be written so).
    pub escaped_nul: bool,
    /// A number PostgreSQL's `numeric` refuses as written: more than 4 exponent digits
    /// or 1,000 characters (it takes at most 16,383 decimal places, and exponents up to
    /// about 10^9).
    pub unfit_number: bool,
}

/// What storing a value's JSON text (known to be JSON) needs to know.
pub fn storable(json: &str) -> Storable {
    let mut reader = Reader::new(json);
    reader.skip_value();
    reader.seen
}

/// Whether every number in a JSON text is one PostgreSQL's `numeric` takes as written.
pub fn numbers_fit_numeric(json: &str) -> bool {
    !storable(json).unfit_number
}

/// A position in JSON text, and what storing the text read so far needs to know.
pub(super) struct Reader<'a> {
    text: &'a str,
    /// The next byte to read.
    pub at: usize,
    pub seen: Storable,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader { text, at: 0, seen: Storable::default() }
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The next byte after whitespace, not consumed; `None` at the end.
    pub fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.at)? {
                b' ' | b'\t' | b'\n' | b'\r' => self.at += 1,
                byte => return Some(byte),
            }
        }
    }

    /// Consumes `byte`, the next after whitespace.
    pub fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// `true`, `false` or `null`.
    pub fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.text.as_bytes().get(self.at..self.at + word.len())? == word).then(|| self.at += word.len())
    }

    /// The string opening at the next byte, decoded: borrowed from the text unless it
    /// has escapes, which serde_json decodes (so a lone surrogate is refused as it
    /// refuses it).
    pub fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.at;
        match self.string_end()? {
            false => self.text.get(start + 1..self.at - 1).map(Cow::Borrowed),
            true => serde_json::from_str(self.text.get(start..self.at)?).ok().map(Cow::Owned),
        }
    }

    /// Past the string opening at the next byte (a quote); whether it has escapes.
    /// `None` when it is not a JSON string: unterminated, a control character, or an
    /// escape JSON does not have.
    #[inline(always)]
    fn string_end(&mut self) -> Option<bool> {
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        let mut i = self.at + 1;
        loop {
            i = special(bytes, i, self.at);
            match *bytes.get(i)? {
                b'"' => {
                    self.at = i + 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    i += match *bytes.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' => {
                            let hex = bytes.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.seen.escaped_nul |= hex == b"0000";
                            6
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => i += 1,
            }
        }
    }

    /// The number at the next byte, as written, checked against JSON's grammar.
    pub fn number(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let digits = |mut i: usize| {
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let start = self.at;
        let mut i = start + usize::from(bytes.get(start) == Some(&b'-'));
        i = match *bytes.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i + 1),
            _ => return None,
        };
        if bytes.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        let mut exponent_digits = 0;
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1 + usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
            let end = digits(i);
            exponent_digits = end - i;
            if exponent_digits == 0 {
                return None;
            }
            i = end;
        }
        if i - start > 1000 || exponent_digits > 4 {
            self.seen.unfit_number = true;
        }
        self.at = i;
        self.text.get(start..i)
    }

    /// Past the value at the next byte, in text known to be JSON (no nesting limit,
    /// nothing decoded): for [`storable`].
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.string_end()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.at += 1;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b't' | b'n' => self.at += 4,
                b'f' => self.at += 5,
                _ => self.at += 1, // `,` and `:` between the members of a container
            }
            if depth == 0 {
                return Some(());
            }
        }
    }
}

/// The number a token of JSON text is, as serde_json's `Value` reads it: integers of up
/// to 18 digits here, anything else by serde_json itself. `None` where it refuses the
/// number (beyond an `f64`).
pub(super) fn number(token: &str) -> Option<Number> {
    let (negative, digits) = match token.as_bytes() {
        [b'-', digits @ ..] => (true, digits),
        digits => (false, digits),
    };
    if digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit) {
        let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        match negative {
            false => return Some(n.into()),
            // (`-0` is the float -0.0 to serde_json: left to it.)
            true if n != 0 => return Some((-(n as i64)).into()),
            true => {}
        }
    }
    serde_json::from_str(token).ok()
}

/// The first quote, backslash or control character in `bytes` from `i` on, in the
/// string opening at `start`; or where fewer than eight bytes are left. Most strings
/// are short: eight bytes at a time beats a byte loop and memchr's set-up on them. One
/// that runs long goes to [`long`].
#[inline(always)]
fn special(bytes: &[u8], mut i: usize, start: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte of `word` below `n`, and maybe of bytes after the first
    // such (a borrow): only the lowest one counts.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * n as u64) & !word & HIGH;
    let equal = |word: u64, b: u8| below(word ^ (ONES * b as u64), 1);
    while let Some(chunk) = bytes.get(i..i + 8) {
        if i - start > 64 {
            return long(bytes, i);
        }
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = equal(word, b'"') | equal(word, b'\\') | below(word, 0x20);
        if found != 0 {
            return i + found.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i
}

/// [`special`] through a long string: memchr jumps to the next quote or backslash, and
/// one pass the compiler vectorises looks for a control character before it.
#[inline(never)]
fn long(bytes: &[u8], i: usize) -> usize {
    let rest = &bytes[i..];
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let span = &rest[..end];
    match span.iter().fold(u8::MAX, |lowest, &b| lowest.min(b)) < 0x20 {
        false => i + end,
        true => i + span.iter().position(|&b| b < 0x20).unwrap_or(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_read_as_serde_json_reads_them() {
        let cases = [
            r#""""#,
            r#""plain""#,
            r#""exactly8""#,
            r#""a string of more than sixteen bytes, é and 🦀, to the end""#,
            r#""a \"quoted\" \\ string \/ \b\f\n\r\t""#,
            r#""\u00e9\u0041 and \uD83E\uDD80""#,
            r#""ends in an escape\n""#,
            r#""\u0000 a NUL""#,
        ];
        let long = format!(r#""{0}\"{0}\\{0}\u00e9{0}""#, "long enough to be jumped through ".repeat(3));
        let cases = cases.iter().copied().chain([long.as_str()]);
        for case in cases {
            let mut reader = Reader::new(case);
            let read = reader.string().map(Cow::into_owned);
            assert_eq!(read, serde_json::from_str::<String>(case).ok(), "{case}");
            assert_eq!(reader.at, case.len(), "{case}");
            assert_eq!(reader.seen.escaped_nul, case.contains("\\u0000"), "{case}");
        }
        let refused = [
            "\"unterminated",
            "\"a \u{1} control\"",
            "\"a\tab\"",
            r#""\x""#,
            r#""\u12g4""#,
            r#""\uD800 lone""#,
            "\"\\",
        ];
        // Long strings are jumped through another way: the same checks hold there.
        let long = |tail: &str| format!("\"{}{tail}", "x".repeat(100));
        let long = [long("\u{1f}x\""), long("x\u{1f}\""), long("\\u{1}"), long("never closed")];
        for case in refused.iter().copied().chain(long.iter().map(String::as_str)) {
            assert_eq!(Reader::new(case).string(), None, "{case:?}");
        }
        let mut reader = Reader::new(r#""\\u0000""#);
        reader.string();
        assert!(!reader.seen.escaped_nul, "an escaped backslash, then text");
    }

    #[test]
    fn numbers_follow_jsons_grammar_and_serde_jsons_values() {
        for good in ["0", "-0", "7", "-12", "1.5", "-0.0e+1", "1E9", "123456789012345678", "18446744073709551616"] {
            let mut reader = Reader::new(good);
            assert_eq!(reader.number(), Some(good), "{good}");
            let value: serde_json::Value = serde_json::from_str(good).unwrap();
            assert_eq!(number(good).map(serde_json::Value::Number), Some(value), "{good}");
        }
        for bad in ["-", "+1", ".5", "1.", "1e", "1e+", "-a"] {
            assert_eq!(Reader::new(bad).number(), None, "{bad}");
        }
        // Where the number ends is for the container to judge.
        for (text, token) in [("01", "0"), ("1.5.2", "1.5"), ("2e3e4", "2e3")] {
            assert_eq!(Reader::new(text).number(), Some(token), "{text}");
        }
        assert_eq!(number("1e400"), None, "beyond an f64, as serde_json refuses it");
    }

    #[test]
    fn numbers_postgres_would_refuse_are_seen() {
        for (number, fits) in [
            ("12.5", true),
            ("-1e-9999", true),
            ("1E+9999", true),
            ("1e-20000", false),
            ("0e99999999999", false),
            (&format!("1.{}", "0".repeat(20_000)), false),
        ] {
            let text = format!(r#"{{"a":[1,{number}],"s":"1e-99999 \" 1e-99999"}}"#);
            assert_eq!(numbers_fit_numeric(&text), fits, "{number}");
        }
        assert!(!numbers_fit_numeric(" 1e123456 "), "a bare number, spaced");
    }
}
