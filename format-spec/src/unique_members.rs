//! SPEC.md §3: no JSON object in the header may repeat a member name, at any depth. The typed parse
//! cannot see this everywhere (ignored unknown members, `provenance.options`, the embedded
//! `tokenizer_json`), so one pass over the raw header checks every object.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{FormatError, Result};

/// Check that `json` is one JSON value whose objects all have distinct member names (compared after
/// unescaping, as RFC 8259 compares strings).
pub(crate) fn check(json: &[u8]) -> Result<()> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(json);
    let root = Node {
        path: &Path::Root,
        found: &found,
    };
    match root.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(()),
        Err(e) => Err(found.into_inner().unwrap_or(FormatError::HeaderJson(e))),
    }
}

/// Where a value sits in the document, innermost last; rendered only for an error.
enum Path<'a> {
    Root,
    Member(&'a Path<'a>, &'a str),
    Element(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    /// A JSON Pointer (RFC 6901): `` for the whole document, `/a/0/b~1c` for `a[0]["b/c"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Member(parent, key) => {
                write!(f, "{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
            }
            Path::Element(parent, i) => write!(f, "{parent}/{i}"),
        }
    }
}

/// One value of the document, checked recursively.
#[derive(Clone, Copy)]
struct Node<'a> {
    path: &'a Path<'a>,
    found: &'a RefCell<Option<FormatError>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Node {
                path: &Path::Element(self.path, i),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                let path = self.path.to_string();
                let message = format!("duplicate member {key:?} at {path:?}");
                *self.found.borrow_mut() = Some(FormatError::DuplicateMember { key, path });
                return Err(de::Error::custom(message));
            }
            map.next_value_seed(Node {
                path: &Path::Member(self.path, &key),
                found: self.found,
            })?;
            seen.insert(key);
        }
        Ok(())
    }
}
