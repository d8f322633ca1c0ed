//! sentencepiece's precompiled character map (`NormalizerSpec.precompiled_charsmap`, the
//! `Precompiled` normalizer of a `tokenizer.json`), applied the way sentencepiece applies it.
//!
//! The map is `<u32 LE trie size><darts-clone double-array trie><NUL-terminated replacements>`.
//! sentencepiece walks the input from the left, replacing the LONGEST key that starts at the
//! current byte by its replacement, or else keeping one character. The `tokenizers` crate's own
//! `Precompiled` looks up whole grapheme clusters instead, and so differs on sequences the map
//! composes across clusters (half-width kana with a sound mark, Hangul jamo, a letter with a
//! combining mark whose first letter alone is also a key); this module is why the runtime gives
//! sentencepiece's ids on them.

use tokenizers::NormalizedString;

use super::user_defined::UserDefinedPieces;

/// A parsed character map.
#[derive(Debug, Clone)]
pub struct CharsMap {
    trie: Vec<u32>,
    replacements: Vec<u8>,
}

/// Why a character map cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CharsMapError {
    #[error("the precompiled character map has {0} bytes, fewer than its 4-byte trie size")]
    Short(usize),
    #[error(
        "the precompiled character map's trie of {trie} bytes does not fit in its {total} bytes, or is not a whole number of 4-byte units"
    )]
    BadTrieSize { trie: usize, total: usize },
    #[error("the precompiled character map's trie is empty")]
    EmptyTrie,
}

/// A darts-clone unit: `label` in bits 0–7 (and 31), `has_leaf` bit 8, offset in bits 10–31
/// (shifted by 8 more when bit 9 is set); a leaf unit holds the value in bits 0–30.
#[derive(Clone, Copy)]
struct Unit(u32);

impl Unit {
    fn has_leaf(self) -> bool {
        (self.0 >> 8) & 1 == 1
    }
    fn value(self) -> usize {
        (self.0 & ((1 << 31) - 1)) as usize
    }
    fn label(self) -> u32 {
        self.0 & ((1 << 31) | 0xff)
    }
    fn offset(self) -> usize {
        ((self.0 >> 10) << ((self.0 & (1 << 9)) >> 6)) as usize
    }
}

impl CharsMap {
    pub fn parse(blob: &[u8]) -> Result<Self, CharsMapError> {
        let size: [u8; 4] = blob
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(CharsMapError::Short(blob.len()))?;
        let trie_bytes = u32::from_le_bytes(size) as usize;
        let rest = &blob[4..];
        if trie_bytes > rest.len() || !trie_bytes.is_multiple_of(4) {
            return Err(CharsMapError::BadTrieSize {
                trie: trie_bytes,
                total: blob.len(),
            });
        }
        if trie_bytes == 0 {
            return Err(CharsMapError::EmptyTrie);
        }
        let trie = rest[..trie_bytes]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(CharsMap {
            trie,
            replacements: rest[trie_bytes..].to_vec(),
        })
    }

    /// The longest key that `input` starts with: its length in bytes and its replacement. A map
    /// that points outside itself matches nothing there (it cannot make the walk fail).
    fn longest_match(&self, input: &[u8]) -> Option<(usize, &[u8])> {
        let unit = |pos: usize| self.trie.get(pos).copied().map(Unit);
        let mut pos = unit(0)?.offset();
        let mut best = None;
        for (i, &byte) in input.iter().enumerate() {
            pos ^= byte as usize;
            let Some(u) = unit(pos).filter(|u| u.label() == byte as u32) else {
                break;
            };
            pos ^= u.offset();
            if u.has_leaf() {
                let Some(leaf) = unit(pos) else { break };
                best = Some((i + 1, leaf.value()));
            }
        }
        let (len, at) = best?;
        let tail = self.replacements.get(at..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Some((len, &tail[..end]))
    }

    /// `text` normalized as sentencepiece does, as pieces: for each step, the original text it
    /// consumed and what it becomes. A user-defined piece of `whole` that the rest of the text
    /// starts with is one step that keeps it, tried before the map, as sentencepiece does.
    fn steps<'t>(
        &'t self,
        text: &'t str,
        whole: Option<&'t UserDefinedPieces>,
    ) -> impl Iterator<Item = (&'t str, &'t str)> + 't {
        let mut rest = text;
        std::iter::from_fn(move || {
            let c = rest.chars().next()?;
            if let Some((piece, _)) = whole.and_then(|w| w.longest_prefix(rest)) {
                let (consumed, tail) = rest.split_at(piece.len());
                rest = tail;
                return Some((consumed, consumed));
            }
            let (len, replacement) = match self.longest_match(rest.as_bytes()) {
                // A key that ends inside a character, or a replacement that is not UTF-8,
                // cannot come from sentencepiece's builder: keep the character.
                Some((len, r)) if rest.is_char_boundary(len) => match std::str::from_utf8(r) {
                    Ok(r) => (len, r),
                    Err(_) => (c.len_utf8(), &rest[..c.len_utf8()]),
                },
                _ => (c.len_utf8(), &rest[..c.len_utf8()]),
            };
            let (consumed, tail) = rest.split_at(len);
            rest = tail;
            Some((consumed, replacement))
        })
    }

    /// Normalize in place, keeping the alignments to the original text and the pieces of `whole`
    /// as they are.
    pub fn normalize(&self, normalized: &mut NormalizedString, whole: Option<&UserDefinedPieces>) {
        // `transform` takes every output character with the change it makes to the length:
        // 0 for a one-to-one replacement, 1 for each inserted character, -n on the last character
        // of a replacement for n characters it removed; removals before any output are the
        // initial offset.
        let mut changes: Vec<(char, isize)> = Vec::with_capacity(normalized.get().len());
        let mut removed_first = 0usize;
        let mut modified = false;
        for (consumed, replacement) in self.steps(normalized.get(), whole) {
            modified |= consumed != replacement;
            let old = consumed.chars().count() as isize;
            let new = replacement.chars().count() as isize;
            if new == 0 {
                match changes.last_mut() {
                    Some((_, change)) => *change -= old,
                    None => removed_first += old as usize,
                }
                continue;
            }
            let start = changes.len();
            changes.extend(replacement.chars().map(|c| (c, 0)));
            if new > old {
                for (_, change) in &mut changes[start + old as usize..] {
                    *change = 1;
                }
            } else if new < old {
                changes.last_mut().expect("a character was pushed").1 -= old - new;
            }
        }
        if modified {
            normalized.transform(changes, removed_first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize_str(m: &CharsMap, text: &str) -> String {
        m.steps(text, None).map(|(_, r)| r).collect()
    }

    /// A darts-clone trie built by hand for "a" → "x", "ab" → "yz" and "b" → "". A child of the
    /// unit at `pos` with offset `o` for byte `c` sits at `pos ^ o ^ c`; a key's leaf (bit 31 set,
    /// the value being the replacement's offset) at `pos ^ o` of its last unit.
    fn tiny() -> CharsMap {
        let unit = |label: u32, leaf: bool, offset: u32| label | (leaf as u32) << 8 | offset << 10;
        let leaf = |value: u32| 1 << 31 | value;
        let mut trie = vec![0u32; 1024];
        trie[0] = unit(0, false, 256);
        trie[256 ^ 0x61] = unit(0x61, true, 512); // 'a' at 353
        trie[353 ^ 512] = leaf(0); // "x"
        trie[353 ^ 512 ^ 0x62] = unit(0x62, true, 128); // 'a' 'b' at 771
        trie[771 ^ 128] = leaf(2); // "yz"
        trie[256 ^ 0x62] = unit(0x62, true, 64); // 'b' at 354
        trie[354 ^ 64] = leaf(5); // ""
        let mut blob = ((trie.len() * 4) as u32).to_le_bytes().to_vec();
        for u in &trie {
            blob.extend_from_slice(&u.to_le_bytes());
        }
        blob.extend_from_slice(b"x\0yz\0\0");
        CharsMap::parse(&blob).unwrap()
    }

    #[test]
    fn the_longest_key_wins_and_other_characters_are_kept() {
        let m = tiny();
        assert_eq!(normalize_str(&m, "a"), "x");
        assert_eq!(normalize_str(&m, "ab"), "yz");
        assert_eq!(normalize_str(&m, "aab"), "xyz");
        assert_eq!(normalize_str(&m, "bcb"), "c");
        assert_eq!(normalize_str(&m, "é日a"), "é日x");
    }

    #[test]
    fn user_defined_pieces_are_kept_where_a_step_starts() {
        let m = tiny();
        let whole = UserDefinedPieces::new([("b<".to_string(), 9)]);
        let normalize =
            |text: &str| -> String { m.steps(text, Some(&whole)).map(|(_, r)| r).collect() };
        // The map would drop "b"; the piece "b<" stays whole, except inside the key "ab", which
        // a step starting at "a" takes first.
        assert_eq!(normalize("b<a"), "b<x");
        assert_eq!(normalize("bb<"), "b<");
        assert_eq!(normalize("ab<b<"), "yz<b<");
        let mut n = NormalizedString::from("cab<b<");
        m.normalize(&mut n, Some(&whole));
        assert_eq!(n.get(), "cyz<b<");
    }

    #[test]
    fn alignments_follow_the_replacements() {
        let m = tiny();
        for text in ["ab", "bab", "abbb", "cab", "b", "ééab"] {
            let mut n = NormalizedString::from(text);
            m.normalize(&mut n, None);
            assert_eq!(n.get(), normalize_str(&m, text), "{text:?}");
            // Every normalized byte maps back to a range of the original.
            for i in 0..n.get().len() {
                if n.get().is_char_boundary(i) {
                    let r = n.convert_offsets(
                        tokenizers::tokenizer::normalizer::Range::Normalized(i..i + 1),
                    );
                    assert!(r.is_some_and(|r| r.end <= text.len()), "{text:?} at {i}");
                }
            }
        }
    }

    #[test]
    fn malformed_maps_are_refused_or_match_nothing() {
        assert_eq!(
            CharsMap::parse(&[1, 0]).unwrap_err(),
            CharsMapError::Short(2)
        );
        assert_eq!(
            CharsMap::parse(&[8, 0, 0, 0, 1, 2, 3]).unwrap_err(),
            CharsMapError::BadTrieSize { trie: 8, total: 7 }
        );
        assert_eq!(
            CharsMap::parse(&[0, 0, 0, 0]).unwrap_err(),
            CharsMapError::EmptyTrie
        );
        // A root whose offset points outside the trie, and a leaf value outside the
        // replacements: nothing matches, nothing panics.
        let mut blob = 8u32.to_le_bytes().to_vec();
        blob.extend_from_slice(&(0x003f_ffff_u32 << 10).to_le_bytes());
        blob.extend_from_slice(&u32::MAX.to_le_bytes());
        let m = CharsMap::parse(&blob).unwrap();
        assert_eq!(normalize_str(&m, "abc ☃"), "abc ☃");
    }
}
