//! The payload as the JSON Schema validator reads it: a flat document borrowed from the
//! message body, built in the one pass that reads the envelope ([`Payload::read`]).
//!
//! Why not `serde_json::Value`: a `Value` allocates every string and every object, and
//! frees them again, for a tree that lives only until the verdict. That was the largest
//! part of what the processor spends on a message beyond receiving and deleting it.
//! Here a payload is one `Vec` of entries in document order; a string without escapes
//! points into the body. jsonschema validates it through its traits for custom
//! representations ([`jsonschema::json`]), so the verdict comes from the same validator
//! and the same compiled schema; a `Value` is built only for error messages.
//!
//! Reading gives what `Value`'s own reading gives (strings with escapes and numbers
//! other than short integers are decoded by serde_json itself), and declines what it
//! would read differently, which the envelope then reads as a `Value`
//! ([`Payload::from_value`]): an object with a repeated key (`Value` keeps the last
//! one), one opening with serde_json's raw value marker key, a string or number
//! `Value` refuses, deep nesting.

use std::borrow::Cow;

use jsonschema::json::{cmp, Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde_json::{Number, Value};

use super::text::{self, Reader};

/// A parsed payload: its values in document order, each container followed by its
/// members (an object's as key, value pairs).
#[derive(Debug, Clone)]
pub struct Payload<'a> {
    entries: Vec<Entry<'a>>,
}

#[derive(Debug, Clone)]
enum Entry<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    /// `len` elements; `end` is the index just past its last descendant.
    Array {
        len: u32,
        end: u32,
    },
    /// `len` members (each a key entry, then its value); `end` as for arrays.
    Object {
        len: u32,
        end: u32,
    },
}

/// The index of the entry after the value at `i` and its descendants.
fn after(entries: &[Entry], i: usize) -> usize {
    match entries[i] {
        Entry::Array { end, .. } | Entry::Object { end, .. } => end as usize,
        _ => i + 1,
    }
}

fn key_at<'a>(entries: &'a [Entry<'a>], i: usize) -> &'a str {
    match &entries[i] {
        Entry::String(key) => key,
        _ => unreachable!("an object member starts with its key"),
    }
}

impl<'a> Payload<'a> {
    /// The root value, as the validator takes it.
    pub fn root(&self) -> PayloadNode<'_> {
        PayloadNode(Place::At(&self.entries, 0))
    }

    /// The payload as a `Value`: for error messages and the rare paths that need one.
    pub fn to_value(&self) -> Value {
        value_at(&self.entries, 0)
    }

    /// A payload read from a `Value` (owning its strings).
    pub fn from_value(value: &Value) -> Payload<'static> {
        fn push(entries: &mut Vec<Entry<'static>>, value: &Value) {
            match value {
                Value::Null => entries.push(Entry::Null),
                Value::Bool(b) => entries.push(Entry::Bool(*b)),
                Value::Number(n) => entries.push(Entry::Number(n.clone())),
                Value::String(s) => entries.push(Entry::String(Cow::Owned(s.clone()))),
                Value::Array(items) => {
                    let at = entries.len();
                    entries.push(Entry::Null);
                    items.iter().for_each(|item| push(entries, item));
                    entries[at] = Entry::Array { len: items.len() as u32, end: entries.len() as u32 };
                }
                Value::Object(members) => {
                    let at = entries.len();
                    entries.push(Entry::Null);
                    for (key, item) in members {
                        entries.push(Entry::String(Cow::Owned(key.clone())));
                        push(entries, item);
                    }
                    entries[at] = Entry::Object { len: members.len() as u32, end: entries.len() as u32 };
                }
            }
        }
        let mut entries = Vec::new();
        push(&mut entries, value);
        Payload { entries }
    }

    pub fn is_string(&self) -> bool {
        matches!(self.entries[0], Entry::String(_))
    }
}

fn value_at(entries: &[Entry], i: usize) -> Value {
    match &entries[i] {
        Entry::Null => Value::Null,
        Entry::Bool(b) => Value::Bool(*b),
        Entry::Number(n) => Value::Number(n.clone()),
        Entry::String(s) => Value::String(s.to_string()),
        Entry::Array { len, .. } => {
            Value::Array(Siblings::elements(entries, i, *len).map(|at| value_at(entries, at)).collect())
        }
        Entry::Object { len, .. } => Value::Object(
            Siblings::members(entries, i, *len)
                .map(|at| (key_at(entries, at - 1).to_owned(), value_at(entries, at)))
                .collect(),
        ),
    }
}

/// The values of the container at `at`, in order (for an object, each just after its
/// key): the one way through a container, for the validator's iterators and ours.
#[derive(Clone)]
struct Siblings<'a> {
    entries: &'a [Entry<'a>],
    next: usize,
    left: u32,
    /// An object's: each value follows its key.
    keyed: bool,
}

impl<'a> Siblings<'a> {
    fn elements(entries: &'a [Entry<'a>], at: usize, len: u32) -> Siblings<'a> {
        Siblings { entries, next: at + 1, left: len, keyed: false }
    }

    fn members(entries: &'a [Entry<'a>], at: usize, len: u32) -> Siblings<'a> {
        Siblings { entries, next: at + 1, left: len, keyed: true }
    }
}

impl Iterator for Siblings<'_> {
    /// The value's index.
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.left = self.left.checked_sub(1)?;
        let value = self.next + usize::from(self.keyed);
        self.next = after(self.entries, value);
        Some(value)
    }
}

/// Nesting [`Payload::read`] takes (serde_json's `Value` takes 128): a deeper payload is
/// read as a `Value`.
const MAX_DEPTH: usize = 64;

impl<'a> Payload<'a> {
    /// Reads the value at the reader's next byte, checking it is JSON as it goes: one
    /// pass, entries pushed as their tokens are read, strings without escapes borrowed.
    /// `None` for text that is not JSON, and for what only `Value`'s reading gets right:
    /// a key given twice (`Value` keeps the last), serde_json's raw value marker, a
    /// string or number `Value` refuses, nesting deeper than [`MAX_DEPTH`].
    pub(super) fn read(reader: &mut Reader<'a>) -> Option<Payload<'a>> {
        // Room for a typical event (about 30 values) in 1,008 bytes: glibc's malloc serves
        // up to 1,032 from its per-thread cache, larger ones from its bins at several times
        // the cost. Bigger payloads grow the one allocation.
        let mut entries = Vec::with_capacity(42);
        // The containers around the next value: each one's entry and members so far.
        let mut open = [(0usize, 0u32); MAX_DEPTH];
        let mut depth = 0;
        loop {
            let empty = match reader.peek()? {
                bracket @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    open[depth] = (entries.len(), 0);
                    depth += 1;
                    reader.at += 1;
                    let (entry, close) = match bracket {
                        b'{' => (Entry::Object { len: 0, end: 0 }, b'}'),
                        _ => (Entry::Array { len: 0, end: 0 }, b']'),
                    };
                    entries.push(entry);
                    if reader.peek()? != close {
                        if close == b'}' {
                            key(reader, &mut entries, true)?;
                        }
                        continue;
                    }
                    true
                }
                b'"' => {
                    entries.push(Entry::String(reader.string()?));
                    false
                }
                b'-' | b'0'..=b'9' => {
                    entries.push(Entry::Number(text::number(reader.number()?)?));
                    false
                }
                b't' => {
                    reader.literal(b"true")?;
                    entries.push(Entry::Bool(true));
                    false
                }
                b'f' => {
                    reader.literal(b"false")?;
                    entries.push(Entry::Bool(false));
                    false
                }
                b'n' => {
                    reader.literal(b"null")?;
                    entries.push(Entry::Null);
                    false
                }
                _ => return None,
            };
            // Past a value, or at the end of an empty container: close what ends here.
            let mut counted = !empty;
            loop {
                let Some(top) = depth.checked_sub(1) else { return Some(Payload { entries }) };
                let (at, len) = &mut open[top];
                *len += u32::from(counted);
                counted = true;
                let (at, len, object) = (*at, *len, matches!(entries[*at], Entry::Object { .. }));
                match (reader.peek()?, object) {
                    (b',', _) => {
                        reader.at += 1;
                        if object {
                            key(reader, &mut entries, false)?;
                        }
                        break;
                    }
                    (b'}', true) if !repeated_key(&entries, at, len) => {
                        entries[at] = Entry::Object { len, end: u32::try_from(entries.len()).ok()? }
                    }
                    (b']', false) => entries[at] = Entry::Array { len, end: u32::try_from(entries.len()).ok()? },
                    _ => return None,
                }
                reader.at += 1;
                depth = top;
            }
        }
    }
}

/// Reads an object's key at the reader's next byte, and the `:` after it.
fn key<'a>(reader: &mut Reader<'a>, entries: &mut Vec<Entry<'a>>, first: bool) -> Option<()> {
    if reader.peek()? != b'"' {
        return None;
    }
    let key = reader.string()?;
    // serde_json's `Value` reads an object opening with this key as the JSON text of
    // its value (its `raw_value` feature's marker): left to the `Value` reading.
    if first && key == RAW_VALUE_MARKER {
        return None;
    }
    entries.push(Entry::String(key));
    reader.eat(b':')
}

/// The key serde_json's `Value` treats as a raw value (`serde_json::raw::TOKEN`, private).
const RAW_VALUE_MARKER: &str = "$serde_json::private::RawValue";

/// Whether a key of the object at `at` (its members complete) is given twice. Small
/// objects compare each key with those before it, by length and first bytes first;
/// large ones are sorted, so a body of many keys costs n log n.
fn repeated_key(entries: &[Entry], at: usize, len: u32) -> bool {
    let keys = Siblings::members(entries, at, len).map(|value| key_at(entries, value - 1));
    if len <= 16 {
        let mut seen = [(0u128, ""); 16];
        for (i, key) in keys.enumerate() {
            let print = fingerprint(key);
            if seen[..i].iter().any(|&(earlier_print, earlier)| earlier_print == print && earlier == key) {
                return true;
            }
            seen[i] = (print, key);
        }
        return false;
    }
    let mut sorted: Vec<&str> = keys.collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

/// A key's length and first eight bytes: two keys that differ in either are different.
fn fingerprint(key: &str) -> u128 {
    let mut head = [0u8; 8];
    let n = key.len().min(8);
    head[..n].copy_from_slice(&key.as_bytes()[..n]);
    (key.len() as u128) << 64 | u64::from_le_bytes(head) as u128
}

/// The representation jsonschema validates payloads in (see the module's comment).
pub struct PayloadJson;

impl Json for PayloadJson {
    type Node<'a> = PayloadNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();

    // Lookups scan an object's members, so a pass over them pays off early.
    const KEYS_PER_LOOKUP: usize = 4;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(PayloadNode<'_>) -> T) -> T {
        f(PayloadNode(Place::Name(string)))
    }
}

/// One value of a payload, or a property name being validated (`propertyNames`).
#[derive(Clone, Copy)]
pub struct PayloadNode<'a>(Place<'a>);

#[derive(Clone, Copy)]
enum Place<'a> {
    At(&'a [Entry<'a>], u32),
    Name(&'a str),
}

impl<'a> PayloadNode<'a> {
    fn entry(&self) -> Option<&'a Entry<'a>> {
        match *self {
            PayloadNode(Place::At(entries, i)) => Some(&entries[i as usize]),
            PayloadNode(Place::Name(_)) => None,
        }
    }
}

impl<'a> Node<'a, PayloadJson> for PayloadNode<'a> {
    type Object = Members<'a>;
    type Array = Elements<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<Members<'a>> {
        match (self, self.entry()) {
            (PayloadNode(Place::At(entries, at)), Some(Entry::Object { len, .. })) => {
                Some(Members(Siblings::members(entries, *at as usize, *len)))
            }
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Elements<'a>> {
        match (self, self.entry()) {
            (PayloadNode(Place::At(entries, at)), Some(Entry::Array { len, .. })) => {
                Some(Elements(Siblings::elements(entries, *at as usize, *len)))
            }
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match (self, self.entry()) {
            (PayloadNode(Place::Name(name)), _) => Some(Cow::Borrowed(name)),
            (_, Some(Entry::String(s))) => Some(Cow::Borrowed(&**s)),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.entry() {
            Some(Entry::Number(n)) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.entry() {
            Some(Entry::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.entry(), Some(Entry::Null))
    }

    fn json_type(&self) -> JsonType {
        match self.entry() {
            None | Some(Entry::String(_)) => JsonType::String,
            Some(Entry::Null) => JsonType::Null,
            Some(Entry::Bool(_)) => JsonType::Boolean,
            Some(Entry::Number(_)) => JsonType::Number,
            Some(Entry::Array { .. }) => JsonType::Array,
            Some(Entry::Object { .. }) => JsonType::Object,
        }
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let string = self.as_string()?;
        // A code point takes one to four bytes: the byte count often decides alone.
        let bytes = string.len() as u64;
        if bytes < min || bytes.div_ceil(4) > max {
            return Some(false);
        }
        if min <= bytes.div_ceil(4) && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(string.chars().count() as u64)))
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` and `const` on scalars, the common case, without building a `Value`.
        match (self.entry(), expected) {
            (None, Value::String(e)) => self.as_string().is_some_and(|s| s == e.as_str()),
            (None, _) => false,
            (Some(Entry::String(s)), Value::String(e)) => s == e,
            (Some(Entry::Bool(b)), Value::Bool(e)) => b == e,
            (Some(Entry::Null), Value::Null) => true,
            (Some(Entry::Number(n)), Value::Number(_)) => cmp::equal(&Value::Number(n.clone()), expected),
            (Some(Entry::Array { .. } | Entry::Object { .. }), Value::Array(_) | Value::Object(_)) => {
                cmp::equal(&self.to_value(), expected)
            }
            _ => false,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match *self {
            PayloadNode(Place::At(entries, i)) => value_at(entries, i as usize),
            PayloadNode(Place::Name(name)) => Value::String(name.to_owned()),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        match *self {
            PayloadNode(Place::At(entries, i)) => Some(NodeIdentity::tagged(entries.as_ptr() as usize, i)),
            PayloadNode(Place::Name(_)) => None,
        }
    }
}

/// An object's members.
pub struct Members<'a>(Siblings<'a>);

impl<'a> Object<'a, PayloadJson> for Members<'a> {
    type Node = PayloadNode<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        self.0.left as usize
    }

    fn get(&self, key: &Box<str>) -> Option<PayloadNode<'a>> {
        self.members().find(|(name, _)| *name == &**key).map(|(_, value)| value)
    }

    fn members(&self) -> MembersIter<'a> {
        MembersIter(self.0.clone())
    }
}

pub struct MembersIter<'a>(Siblings<'a>);

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, PayloadNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (entries, value) = (self.0.entries, self.0.next()?);
        Some((key_at(entries, value - 1), PayloadNode(Place::At(entries, value as u32))))
    }
}

/// An array's elements.
pub struct Elements<'a>(Siblings<'a>);

impl<'a> Array<'a, PayloadJson> for Elements<'a> {
    type Node = PayloadNode<'a>;
    type ElementsIter = ElementsIter<'a>;

    fn len(&self) -> usize {
        self.0.left as usize
    }

    fn elements(&self) -> ElementsIter<'a> {
        ElementsIter(self.0.clone())
    }
}

pub struct ElementsIter<'a>(Siblings<'a>);

impl<'a> Iterator for ElementsIter<'a> {
    type Item = PayloadNode<'a>;

    fn next(&mut self) -> Option<PayloadNode<'a>> {
        let (entries, at) = (self.0.entries, self.0.next()?);
        Some(PayloadNode(Place::At(entries, at as u32)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::producers::generator::{Generator, Invalid, Mix};
    use crate::producers::templates::EventsFile;
    use crate::registry::{Registry, RegistryFile};
    use crate::validation::Envelope;

    /// A whole text read as a payload; `None` where [`Payload::read`] declines it.
    fn read(text: &str) -> Option<Payload<'_>> {
        let mut reader = Reader::new(text);
        let payload = Payload::read(&mut reader)?;
        reader.peek().is_none().then_some(payload)
    }

    /// jsonschema's verdict and errors for `text` are the same read as a `Value` and as a `Payload`.
    fn both_ways(validators: &(jsonschema::Validator, jsonschema::Validator<PayloadJson>), text: &str) {
        let value: Value = serde_json::from_str(text).unwrap();
        let payload = read(text).unwrap();
        assert_eq!(payload.to_value(), value, "{text}");
        let (by_value, by_payload) = validators;
        assert_eq!(by_value.is_valid(&value), by_payload.is_valid(payload.root()), "{text}");
        // Where and why; a message naming several members names them in the order sent,
        // where a `Value` has them sorted.
        let listed = |errors: jsonschema::ErrorIterator| {
            let mut listed: Vec<String> =
                errors.map(|e| format!("{} | {}", e.instance_path(), e.schema_path())).collect();
            listed.sort();
            listed
        };
        assert_eq!(listed(by_value.iter_errors(&value)), listed(by_payload.iter_errors(payload.root())), "{text}");
    }

    fn compiled(schema: &Value) -> (jsonschema::Validator, jsonschema::Validator<PayloadJson>) {
        (
            jsonschema::options().should_validate_formats(true).build(schema).unwrap(),
            jsonschema::options_for::<PayloadJson>().should_validate_formats(true).build(schema).unwrap(),
        )
    }

    #[test]
    fn every_keyword_judges_a_payload_as_it_judges_a_value() {
        let schemas = [
            json!({"type": "object", "required": ["a", "b"], "additionalProperties": false,
                   "properties": {"a": {"type": "integer", "minimum": 1, "maximum": 100}, "b": {"type": "string"}}}),
            json!({"type": "integer"}),
            json!({"type": ["number", "null"], "multipleOf": 0.01, "exclusiveMinimum": 0}),
            json!({"enum": ["a", 1, 1.5, null, true, {"k": [1]}, [1, "x"]]}),
            json!({"const": {"k": [1, 2.0], "s": "é"}}),
            json!({"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-zé\"]+$"}),
            json!({"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3, "uniqueItems": true}),
            json!({"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}),
            json!({"contains": {"const": 2}, "minContains": 2}),
            json!({"propertyNames": {"pattern": "^[a-z]+$", "maxLength": 3}, "minProperties": 1, "maxProperties": 3}),
            json!({"patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": {"type": "integer"}}),
            json!({"properties": {"a": {}}, "unevaluatedProperties": false}),
            json!({"dependentRequired": {"a": ["b"]}, "dependentSchemas": {"b": {"required": ["c"]}}}),
            json!({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 2}], "not": {"const": 7}}),
            json!({"anyOf": [{"type": "string"}, {"type": "object"}], "allOf": [{"maxLength": 3}, {"maxProperties": 1}]}),
            json!({"if": {"properties": {"k": {"const": "a"}}}, "then": {"required": ["x"]}, "else": {"required": ["y"]}}),
            json!({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                   "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}},
                   "$ref": "#/$defs/node"}),
            json!({"type": "object", "properties": {
                "email": {"format": "email"}, "host": {"format": "hostname"}, "uri": {"format": "uri"},
                "id": {"format": "uuid"}, "ip4": {"format": "ipv4"}, "ip6": {"format": "ipv6"},
                "at": {"format": "date-time"}, "day": {"format": "date"}}}),
        ];
        let instances = [
            r#"{"a": 5, "b": "x"}"#,
            r#"{"a": 5.0, "b": "x", "c": null}"#,
            r#"{"a": 1e2, "b": 3}"#,
            r#"{"a": 0, "b": "é\"\u00e9\n"}"#,
            r#"7"#,
            r#"-0"#,
            r#"1.0"#,
            r#"0.07"#,
            r#"18446744073709551616"#,
            r#"-9223372036854775809"#,
            r#"1e-20000"#,
            r#"null"#,
            r#"true"#,
            r#""ab""#,
            r#""é\"a""#,
            r#""a\u0041""#,
            r#""abcdé""#,
            r#"[]"#,
            r#"[1, 2, 2.0]"#,
            r#"[1, 2, 3, 4]"#,
            r#"["a", 1]"#,
            r#"["a", 1, 2]"#,
            r#"[2, "x", 2]"#,
            r#"[{"k": [1]}, {"k": [1.0]}]"#,
            r#"{"k": [1, 2.0], "s": "é"}"#,
            r#"{"k": [1, 2], "s": "\u00e9"}"#,
            r#"{"x-a": "s", "x-b": 1, "b": 2, "c": "no"}"#,
            r#"{"abcd": 1}"#,
            r#"{"A": 1}"#,
            r#"{"a": 1, "b": 2}"#,
            r#"{"a": 1, "b": 2, "c": 3}"#,
            r#"{"k": "a", "x": 1}"#,
            r#"{"k": "a", "y": 1}"#,
            r#"{"k\u0041": "a"}"#,
            r#"{"v": 1, "children": [{"v": 2, "children": []}, {"v": "no"}, {"children": []}]}"#,
            r#"{"email": "a@example.com", "host": "api.example.com", "uri": "https://example.com/a?b=c",
                "id": "0f8fad5b-d9cb-469f-a165-70867728950e", "ip4": "10.0.0.1", "ip6": "::1",
                "at": "2026-11-26T14:00:00Z", "day": "2026-11-26"}"#,
            r#"{"email": "not an email", "host": "-bad-", "uri": "no scheme", "id": "nope",
                "ip4": "300.1.1.1", "ip6": "::g", "at": "yesterday", "day": "2026-13-01"}"#,
        ];
        for schema in &schemas {
            let validators = compiled(schema);
            for text in instances {
                both_ways(&validators, text);
            }
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_body() {
        let payload = read(r#"{"plain": "abc", "esc\"aped": "a\nb"}"#).unwrap();
        let object = payload.root().as_object().unwrap();
        let strings: Vec<(&str, bool)> =
            object.members().map(|(name, value)| (name, matches!(value.as_string(), Some(Cow::Borrowed(_))))).collect();
        assert_eq!(strings, [("plain", true), ("esc\"aped", true)]);
        assert!(matches!(&payload.entries[2], Entry::String(Cow::Borrowed("abc"))));
        assert!(matches!(&payload.entries[3], Entry::String(Cow::Owned(_))), "a decoded key is owned");
    }

    #[test]
    fn serde_jsons_raw_value_marker_is_read_as_value_reads_it() {
        assert!(read(r#"{"$serde_json::private::RawValue": "[1,2]"}"#).is_none());
        assert!(read(r#"{"a": 1, "$serde_json::private::RawValue": 2}"#).is_some());
        let body = r#"{"client_id":"c","event_type":"t","payload":{"$serde_json::private::RawValue":"[1,2]"}}"#;
        assert_eq!(Envelope::parse(body).unwrap().payload.to_value(), json!([1, 2]));
        let body = r#"{"client_id":"c","event_type":"t","payload":{"$serde_json::private::RawValue":5}}"#;
        assert!(Envelope::parse(body).is_err(), "not JSON text: refused, as before");
    }

    #[test]
    fn many_keys_are_checked_for_repeats_in_n_log_n() {
        let keys = |n: usize| (0..n).map(|i| format!(r#""k{i}":0"#)).collect::<Vec<_>>().join(",");
        assert!(read(&format!("{{{}}}", keys(100_000))).is_some());
        assert!(read(&format!(r#"{{{},"k7":1}}"#, keys(100_000))).is_none());
        assert!(read(r#"{"a": 1, "b": 2, "\u0061": 3}"#).is_none(), "compared decoded");
    }

    #[test]
    fn a_repeated_key_is_refused_and_the_envelope_reads_it_as_value_does() {
        assert!(read(r#"{"a": 1, "b": {"a": 1}, "a": 2}"#).is_none());
        assert!(read(r#"[{"a": 1}, {"a": 2}]"#).is_some(), "keys repeat across objects");
        // Keys alike in length and first eight bytes, in a small object and at 16 keys.
        assert!(read(r#"{"same-head-1": 1, "same-head-2": 2, "": 3}"#).is_some());
        assert!(read(r#"{"same-head-1": 1, "x": 2, "same-head-1": 3}"#).is_none());
        let sixteen = |last: &str| {
            let keys: Vec<String> = (0..15).map(|i| format!(r#""same-head-{i:02}":0"#)).collect();
            format!(r#"{{{},"{last}":0}}"#, keys.join(","))
        };
        assert!(read(&sixteen("same-head-15")).is_some());
        assert!(read(&sixteen("same-head-03")).is_none());
        let body = r#"{"client_id":"c","event_type":"t","payload":{"a":1,"a":{"b":2}}}"#;
        let envelope = Envelope::parse(body).unwrap();
        assert_eq!(envelope.payload.to_value(), json!({"a": {"b": 2}}));
        assert_eq!(envelope.payload_json, r#"{"a":1,"a":{"b":2}}"#, "stored as sent");
    }

    /// Every generated body of both benchmark workloads, valid and of each bad kind:
    /// the payload is judged as its `Value` would be.
    #[test]
    fn generated_events_are_judged_as_their_values_would_be() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deployments/bench");
        let workloads = [
            (RegistryFile::demo(), EventsFile::demo()),
            (
                RegistryFile::read(&root.join("formats-registry.json")).unwrap(),
                EventsFile::read(&root.join("formats-events.json")).unwrap(),
            ),
        ];
        let mut judged = [0; 2];
        for (file, events) in workloads {
            let registry = Registry::from_file(&file).unwrap();
            let mut generator = Generator::new(events, Mix::default(), Some(5), Some(7));
            let mut bodies: Vec<String> = (0..300).map(|_| generator.valid().body).collect();
            for kind in Invalid::ALL {
                bodies.extend((0..10).map(|_| generator.invalid(kind).body));
            }
            for body in &bodies {
                let Ok(envelope) = Envelope::parse(body) else { continue };
                let Ok(schema) = registry.schema_for(&envelope.client_id, &envelope.event_type, envelope.version)
                else {
                    continue;
                };
                let value: Value = serde_json::from_str(envelope.payload_json).unwrap();
                let reference = jsonschema::options().should_validate_formats(true).build(&schema.document).unwrap();
                let valid = reference.is_valid(&value);
                assert_eq!(schema.validator.is_valid(envelope.payload.root()), valid, "{body}");
                judged[usize::from(valid)] += 1;
            }
        }
        assert!(judged[0] >= 20 && judged[1] >= 300, "both verdicts were exercised: {judged:?}");
    }
}
