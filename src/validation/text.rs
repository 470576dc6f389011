//! Walks over JSON text that has already been parsed, so is known to be valid: finding
//! a member's text as it was sent (what the store writes), and on the same walk what
//! storing it needs to know ([`Storable`]), so the payload's bytes are gone over once
//! after the parse rather than once for each question.

/// What PostgreSQL's jsonb would make of a value's text, seen on the walk.
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

/// The text of the top-level member `name` of an object's JSON text, without the
/// whitespace around it (as `RawValue` gives it), and what storing it needs to know.
/// `None` when the member is missing or a key before it is written with escapes.
pub fn member<'a>(object: &'a str, name: &str) -> Option<(&'a str, Storable)> {
    let mut walk = Walk { bytes: object.as_bytes(), seen: Storable::default() };
    let mut i = walk.whitespace(0) + 1; // past `{`
    loop {
        i = walk.whitespace(i);
        if walk.bytes.get(i) != Some(&b'"') {
            return None; // `}`: no such member
        }
        let key_end = walk.string_end(i)?;
        let key = &walk.bytes[i + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        let start = walk.whitespace(walk.whitespace(key_end) + 1); // past `:`
        walk.seen = Storable::default();
        let end = walk.value_end(start)?;
        if key == name.as_bytes() {
            return Some((object.get(start..end)?, walk.seen));
        }
        i = walk.whitespace(end);
        if walk.bytes.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

/// What storing a value's JSON text needs to know.
pub fn storable(json: &str) -> Storable {
    let mut walk = Walk { bytes: json.as_bytes(), seen: Storable::default() };
    let start = walk.whitespace(0);
    walk.value_end(start);
    walk.seen
}

/// Whether every number in a JSON text is one PostgreSQL's `numeric` takes as written.
pub fn numbers_fit_numeric(json: &str) -> bool {
    !storable(json).unfit_number
}

/// A walk over valid JSON text, noting what it sees.
struct Walk<'b> {
    bytes: &'b [u8],
    seen: Storable,
}

impl Walk<'_> {
    fn whitespace(&self, mut i: usize) -> usize {
        while matches!(self.bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }

    /// Just past the value starting at `i`.
    fn value_end(&mut self, mut i: usize) -> Option<usize> {
        let mut depth = 0usize;
        loop {
            i = match *self.bytes.get(i)? {
                b'"' => self.string_end(i)?,
                b'{' | b'[' => {
                    depth += 1;
                    i + 1
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    i + 1
                }
                b'-' | b'0'..=b'9' => self.number_end(i),
                b't' | b'n' => i + 4,
                b'f' => i + 5,
                _ => i + 1, // whitespace, `,` and `:` between the members of a container
            };
            if depth == 0 {
                return Some(i);
            }
        }
    }

    /// Just past the closing quote of the string opening at `start`.
    fn string_end(&mut self, start: usize) -> Option<usize> {
        let mut i = start + 1;
        loop {
            i = self.quote_or_backslash(i, start);
            match *self.bytes.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => {
                    if self.bytes[i + 1..].starts_with(b"u0000") {
                        self.seen.escaped_nul = true;
                    }
                    i += 2; // the backslash and the character it escapes
                }
                _ => i += 1,
            }
        }
    }

    /// The first quote or backslash from `i` on, in the string opening at `start`; or
    /// where fewer than eight bytes are left. Most strings are short: eight bytes at a
    /// time beats memchr's set-up; one that runs long is jumped through with memchr.
    fn quote_or_backslash(&self, mut i: usize, start: usize) -> usize {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        // The high bit of each byte of `word` equal to `b`, and maybe of bytes after
        // the first such (a borrow): only the lowest one counts.
        let equal = |word: u64, b: u8| {
            let x = word ^ (ONES * b as u64);
            x.wrapping_sub(ONES) & !x & HIGH
        };
        while let Some(chunk) = self.bytes.get(i..i + 8) {
            if i - start > 64 {
                let rest = &self.bytes[i..];
                return i + memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
            }
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let found = equal(word, b'"') | equal(word, b'\\');
            if found != 0 {
                return i + found.trailing_zeros() as usize / 8;
            }
            i += 8;
        }
        i
    }

    /// Just past the number starting at `start`.
    fn number_end(&mut self, start: usize) -> usize {
        let mut i = start;
        let mut exponent_digits: Option<usize> = None;
        while let Some(&b) = self.bytes.get(i) {
            match b {
                b'0'..=b'9' => {
                    if let Some(n) = exponent_digits.as_mut() {
                        *n += 1
                    }
                }
                b'e' | b'E' => exponent_digits = Some(0),
                b'-' | b'+' | b'.' => {}
                _ => break,
            }
            i += 1;
        }
        if i - start > 1000 || exponent_digits.is_some_and(|n| n > 4) {
            self.seen.unfit_number = true;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn the_member_text_found_is_the_one_a_full_read_finds() {
        let bodies = [
            r#"{"payload":{"a":"}\"{","b":[1,{"c":"]"}]},"client_id":"c"}"#,
            r#" { "x" : "payload" , "y":{"payload":1}, "payload" :	[ "\\", {} ] , "z":2 }"#,
            r#"{"n":-1.5e3,"t":true,"payload":12.50}"#,
            r#"{"payload":"a \"quoted\" \\ string"}"#,
            r#"{"message":"legacy","payload":null}"#,
            r#"{"k":{"payload\u0000":[]},"payload":false}"#,
            r#"{"l":[true,false,null,{"f":false}],"payload":[true,null,false,-0.0e+1]}"#,
            r#"{"long":"a string of more than sixteen bytes with \"quotes\" and \\","payload":"x"}"#,
            r#"{"payload":{"a long key, more than sixteen bytes":"and a long value, \\\" too"}}"#,
        ];
        for body in bodies {
            let read: HashMap<String, &RawValue> = serde_json::from_str(body).unwrap();
            assert_eq!(member(body, "payload").map(|(text, _)| text), read.get("payload").map(|v| v.get()), "{body}");
        }
        assert_eq!(member(r#"{"message":"m"}"#, "message").map(|(text, _)| text), Some(r#""m""#));
        assert_eq!(member(r#"{"a":1}"#, "payload"), None, "a missing member");
        assert_eq!(member(r#"{"pay\u006coad":1}"#, "payload"), None, "an escaped key: the two-pass way");
        assert_eq!(member(r#"{"k\n":1,"payload":2}"#, "payload"), None, "any escaped key before it, too");
    }

    #[test]
    fn sees_escaped_nul_in_the_member_only() {
        let nul = |body: &str| member(body, "payload").unwrap().1.escaped_nul;
        assert!(nul(r#"{"payload":{"a":"x\u0000y"}}"#));
        assert!(nul(r#"{"payload":{"k\u0000":1}}"#));
        assert!(nul(r#"{"payload":"a string of more than sixteen bytes, then \u0000"}"#));
        assert!(!nul(r#"{"payload":{"a":"x\\u0000"}}"#), "an escaped backslash, then text");
        assert!(!nul(r#"{"other":"\u0000","payload":{"a":"x\u0001"}}"#), "in another member");
        assert!(!nul(r#"{"payload":1,"other":"\u0000"}"#), "after it");
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
            let body = format!(r#"{{"n":1e-99999,"payload":{text}}}"#);
            assert_eq!(member(&body, "payload").unwrap().1.unfit_number, !fits, "{number}");
        }
        assert!(!numbers_fit_numeric(" 1e123456 "), "a bare number, spaced");
    }
}
