//! SentencePiece `tokenizer.model` (a small protobuf, parsed here by hand) → an equivalent Hugging
//! Face `tokenizer.json`: the BPE or Unigram model with its scores and byte fallback, and a
//! normalizer that does what sentencepiece's does, in its order: the precompiled character map
//! (`Precompiled`, which the runtime applies with sentencepiece's longest-match rule), then
//! `remove_extra_whitespaces` (strip spaces at the start, collapse runs), the dummy prefix, spaces
//! escaped as `▁`, and the space symbols the result ends with stripped. The decoder turns `▁` back
//! into spaces, byte pieces into bytes, and drops the dummy prefix. User-defined pieces are added
//! tokens that, by default, the runtime matches as sentencepiece does ([`UserDefinedPieces`]).
//!
//! The dummy prefix is a `Prepend` in the normalizer (transformers' "legacy" form) whatever `legacy`
//! says in `tokenizer_config.json`: it encodes plain text exactly as sentencepiece does
//! (transformers' non-legacy `Metaspace` form differs on text that starts with a space or `▁`).
//! Word and char models and `treat_whitespace_as_suffix` are refused by name.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::{Map, Value, json};

/// The piece that stands for a space.
pub const SPACE: &str = "\u{2581}";

/// Piece types of `sentencepiece_model.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Result<Self, String> {
        Ok(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            other => return Err(format!("unknown piece type {other}")),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// The parts of a SentencePiece model that define how it encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePieceModel {
    pub pieces: Vec<Piece>,
    /// 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    pub normalizer_name: String,
    /// sentencepiece's serialized character map (a double-array trie and the replacement strings);
    /// empty for the identity normalizer.
    pub precompiled_charsmap: Vec<u8>,
    /// Whether the model has a denormalizer with its own character map (applied when decoding).
    pub denormalizer_charsmap: bool,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

/// A minimal protobuf reader: varints, fixed32/64 and length-delimited fields.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or("truncated varint at the end of the data")?;
            self.pos += 1;
            value |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("field of {n} bytes at byte {} runs past the end", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "huge length")?;
                Field::Bytes(self.take(len)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            other => {
                return Err(format!(
                    "unsupported wire type {other} at byte {}",
                    self.pos
                ));
            }
        };
        Ok(Some((key >> 3, field)))
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

impl SentencePieceModel {
    /// Parse a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut m = SentencePieceModel {
            pieces: Vec::new(),
            model_type: 1,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            normalizer_name: String::new(),
            precompiled_charsmap: Vec::new(),
            denormalizer_charsmap: false,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut r = Reader::new(bytes);
        while let Some((number, field)) = r.next()? {
            match (number, field) {
                (1, Field::Bytes(b)) => m.pieces.push(parse_piece(b)?),
                (2, Field::Bytes(b)) => m.parse_trainer_spec(b)?,
                (3, Field::Bytes(b)) => m.parse_normalizer_spec(b)?,
                (5, Field::Bytes(b)) => m.denormalizer_charsmap = has_charsmap(b)?,
                _ => {}
            }
        }
        if m.pieces.is_empty() {
            return Err("no pieces (is this a SentencePiece model?)".into());
        }
        Ok(m)
    }

    fn parse_trainer_spec(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut r = Reader::new(bytes);
        while let Some((number, field)) = r.next()? {
            if let Field::Varint(v) = field {
                match number {
                    3 => self.model_type = v,
                    24 => self.treat_whitespace_as_suffix = v != 0,
                    35 => self.byte_fallback = v != 0,
                    40 => self.unk_id = v as i64 as i32,
                    41 => self.bos_id = v as i64 as i32,
                    42 => self.eos_id = v as i64 as i32,
                    43 => self.pad_id = v as i64 as i32,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn parse_normalizer_spec(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut r = Reader::new(bytes);
        while let Some((number, field)) = r.next()? {
            match (number, field) {
                (1, Field::Bytes(b)) => self.normalizer_name = utf8(b, "normalizer name")?,
                (2, Field::Bytes(b)) => self.precompiled_charsmap = b.to_vec(),
                (3, Field::Varint(v)) => self.add_dummy_prefix = v != 0,
                (4, Field::Varint(v)) => self.remove_extra_whitespaces = v != 0,
                (5, Field::Varint(v)) => self.escape_whitespaces = v != 0,
                _ => {}
            }
        }
        Ok(())
    }

    /// The piece with id `id`, if `id` is a valid id.
    pub fn piece(&self, id: i32) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.pieces.get(i))
            .map(|p| p.piece.as_str())
    }

    /// Refuse models whose encoding the conversion would not reproduce, naming the setting.
    pub fn check_supported(&self) -> Result<(), String> {
        match self.model_type {
            1 | 2 => {}
            3 => return Err("model type word is not supported (only BPE and Unigram)".into()),
            4 => return Err("model type char is not supported (only BPE and Unigram)".into()),
            other => return Err(format!("unknown model type {other}")),
        }
        if self.treat_whitespace_as_suffix {
            return Err("trainer option treat_whitespace_as_suffix is not supported".into());
        }
        if self.denormalizer_charsmap {
            return Err("a denormalizer with a character map is not supported".into());
        }
        if self.piece(self.unk_id).is_none() {
            return Err(format!("unk_id {} is not a piece", self.unk_id));
        }
        Ok(())
    }

    /// "Unigram, normalizer nmt_nfkc, byte fallback", for the conversion notes.
    pub fn describe(&self) -> String {
        let kind = if self.model_type == 1 {
            "Unigram"
        } else {
            "BPE"
        };
        let name = match self.normalizer_name.as_str() {
            "" => "identity",
            name => name,
        };
        let mut parts = vec![kind.to_string(), format!("normalizer {name}")];
        if self.byte_fallback {
            parts.push("byte fallback".into());
        }
        parts.join(", ")
    }

    /// The space symbol the normalizer writes: `▁`, or a plain space without escaping.
    fn space(&self) -> &'static str {
        if self.escape_whitespaces { SPACE } else { " " }
    }
}

/// Whether a `NormalizerSpec` holds a non-empty character map.
fn has_charsmap(bytes: &[u8]) -> Result<bool, String> {
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.next()? {
        if let (2, Field::Bytes(b)) = (number, field) {
            return Ok(!b.is_empty());
        }
    }
    Ok(false)
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.next()? {
        match (number, field) {
            (1, Field::Bytes(b)) => piece.piece = utf8(b, "a piece")?,
            (2, Field::Fixed32(v)) => piece.score = f32::from_bits(v),
            (3, Field::Varint(v)) => piece.kind = PieceType::from_proto(v)?,
            _ => {}
        }
    }
    Ok(piece)
}

/// How text around user-defined pieces is tokenized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserDefinedPieces {
    /// As sentencepiece does: the whole text is normalized once with the pieces kept whole, then
    /// BPE takes each piece as a symbol of its own and Unigram scores it as sentencepiece does.
    /// The tokenizer.json says so with the normalizer's `user_defined_pieces` (SPEC §3.2).
    #[default]
    SentencePiece,
    /// Split from the text before normalization, each part normalized on its own (a dummy prefix
    /// each): what llama.cpp does with a GGUF vocabulary's user-defined tokens.
    SplitFirst,
}

/// Options from `tokenizer_config.json` that shape the result.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Prepend the BOS piece (`add_bos_token`, default true).
    pub add_bos: bool,
    /// Append the EOS piece (`add_eos_token`, default false).
    pub add_eos: bool,
    /// Added tokens by id beyond (or overriding) the model's pieces, e.g. `<pad>`:
    /// `(id, content, special)`.
    pub added: Vec<(u32, String, bool)>,
    pub user_defined: UserDefinedPieces,
}

/// BPE merges: every split of a piece into two pieces, ordered as sentencepiece applies them
/// (highest score first; ties in id order), as transformers' SentencePieceExtractor does.
/// Only a split whose two sides have lengths of existing pieces can be a merge: looking up just
/// those keeps this near-linear in the vocabulary's bytes, even for one very long piece (which a
/// GGUF file can hold) whose every split would otherwise hash a long string.
fn merges(model: &SentencePieceModel, ids: &HashMap<&str, usize>) -> Vec<Value> {
    let lengths: HashSet<usize> = model.pieces.iter().map(|p| p.piece.len()).collect();
    let mut merges: Vec<(f32, &str, &str)> = Vec::new();
    for p in &model.pieces {
        if !matches!(p.kind, PieceType::Normal | PieceType::UserDefined) {
            continue;
        }
        let mut local: Vec<(usize, usize, &str, &str)> = p
            .piece
            .char_indices()
            .skip(1)
            .filter(|&(i, _)| lengths.contains(&i) && lengths.contains(&(p.piece.len() - i)))
            .filter_map(|(i, _)| {
                let (l, r) = p.piece.split_at(i);
                Some((*ids.get(l)?, *ids.get(r)?, l, r))
            })
            .collect();
        local.sort_by_key(|&(il, ir, _, _)| (il, ir));
        merges.extend(local.into_iter().map(|(_, _, l, r)| (p.score, l, r)));
    }
    merges.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    merges.into_iter().map(|(_, l, r)| json!([l, r])).collect()
}

/// The score sentencepiece's Unigram encoder gives a user-defined piece instead of its own: 0.1
/// per byte after the first, in f32 (sentencepiece 0.2.3's `GetUserDefinedScore`), so that it
/// wins over normal pieces, whose scores are log probabilities, and longer pieces over shorter.
fn user_defined_score(piece: &str) -> f32 {
    (0.1 * (piece.len() as f64 - 1.0)) as f32
}

/// Build the `tokenizer.json` document.
pub fn to_tokenizer_json(
    model: &SentencePieceModel,
    options: &ConvertOptions,
) -> Result<Value, String> {
    model.check_supported()?;
    let mut vocab = Map::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (id, p) in model.pieces.iter().enumerate() {
        if ids.insert(p.piece.as_str(), id).is_some() {
            return Err(format!("piece {:?} appears twice", p.piece));
        }
        vocab.insert(p.piece.clone(), json!(id));
    }

    // Added tokens: unknown and control pieces (special), user-defined pieces (not special), then
    // those of tokenizer_config.json / added_tokens.json.
    let mut added: BTreeMap<u32, (String, bool)> = BTreeMap::new();
    for (id, p) in model.pieces.iter().enumerate() {
        let special = match p.kind {
            PieceType::Unknown | PieceType::Control => true,
            PieceType::UserDefined => false,
            _ => continue,
        };
        added.insert(id as u32, (p.piece.clone(), special));
    }
    for (id, content, special) in &options.added {
        if let Some(p) = model.pieces.get(*id as usize)
            && p.piece != *content
        {
            return Err(format!(
                "added token {content:?} has id {id}, which is the piece {:?}",
                p.piece
            ));
        }
        added.insert(*id, (content.clone(), *special));
    }
    // User-defined pieces that stay non-special are matched inside normalization (sentencepiece's
    // way) when asked for: `normalized: true` names them, the normalizer's mark says how.
    let in_normalization: HashSet<u32> = match options.user_defined {
        UserDefinedPieces::SentencePiece => added
            .iter()
            .filter(|&(&id, (_, special))| {
                !special
                    && model
                        .pieces
                        .get(id as usize)
                        .is_some_and(|p| p.kind == PieceType::UserDefined)
            })
            .map(|(&id, _)| id)
            .collect(),
        UserDefinedPieces::SplitFirst => HashSet::new(),
    };
    let added_tokens: Vec<Value> = added
        .iter()
        .map(|(id, (content, special))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": in_normalization.contains(id),
                   "special": special})
        })
        .collect();

    let space = model.space();
    let mut normalizers = Vec::new();
    if !model.precompiled_charsmap.is_empty() {
        normalizers.push(json!({"type": "Precompiled",
            "precompiled_charsmap": BASE64_STANDARD.encode(&model.precompiled_charsmap)}));
    }
    let regex = |pattern: &str, content: &str| json!({"type": "Replace", "pattern": {"Regex": pattern}, "content": content});
    if model.remove_extra_whitespaces {
        normalizers.push(regex(r"\A +", ""));
        normalizers.push(regex(" {2,}", " "));
    }
    if model.add_dummy_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": space}));
    }
    if model.escape_whitespaces {
        normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE}));
    }
    // sentencepiece strips the space symbols its result ends with, `▁` characters of the text
    // included.
    if model.remove_extra_whitespaces {
        normalizers.push(regex(&format!("{space}+\\z"), ""));
    }
    let mut normalizer = json!({"type": "Sequence", "normalizers": normalizers});
    if !in_normalization.is_empty() {
        normalizer["user_defined_pieces"] = json!("sentencepiece");
    }

    // sentencepiece decodes `▁` as a space whether or not it escapes spaces, and drops the dummy
    // prefix only when it is a `▁`.
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": SPACE}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if model.add_dummy_prefix && model.escape_whitespaces {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }

    let bos = model.piece(model.bos_id).filter(|_| options.add_bos);
    let eos = model.piece(model.eos_id).filter(|_| options.add_eos);
    let post_processor = if bos.is_none() && eos.is_none() {
        Value::Null
    } else {
        let special =
            |piece: &str, type_id: u32| json!({"SpecialToken": {"id": piece, "type_id": type_id}});
        let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
        let part = |seq: &str, type_id: u32| {
            let mut v = Vec::new();
            if let Some(b) = bos {
                v.push(special(b, type_id));
            }
            v.push(sequence(seq, type_id));
            if let Some(e) = eos {
                v.push(special(e, type_id));
            }
            v
        };
        let single = part("A", 0);
        let mut pair = part("A", 0);
        pair.extend(part("B", 1));
        let mut special_tokens = Map::new();
        for (piece, id) in [(bos, model.bos_id), (eos, model.eos_id)] {
            if let Some(piece) = piece {
                special_tokens.insert(
                    piece.to_string(),
                    json!({"id": piece, "ids": [id], "tokens": [piece]}),
                );
            }
        }
        json!({"type": "TemplateProcessing", "single": single, "pair": pair,
               "special_tokens": special_tokens})
    };

    let unk = model.piece(model.unk_id).expect("checked as supported");
    let model_json = if model.model_type == 1 {
        let vocab: Vec<Value> = model
            .pieces
            .iter()
            .enumerate()
            .map(|(id, p)| {
                if in_normalization.contains(&(id as u32)) {
                    json!([p.piece, user_defined_score(&p.piece)])
                } else {
                    json!([p.piece, p.score])
                }
            })
            .collect();
        json!({"type": "Unigram", "unk_id": model.unk_id, "vocab": vocab,
               "byte_fallback": model.byte_fallback})
    } else {
        json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": model.byte_fallback,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges(model, &ids),
        })
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": model_json,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(number: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        varint(2 << 3 | 5, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        varint(3 << 3, &mut p);
        varint(kind, &mut p);
        p
    }

    fn model() -> Vec<u8> {
        let mut m = Vec::new();
        for (text, score, kind) in [
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("\u{2581}a", -1.0, 1),
            ("\u{2581}", -2.0, 1),
            ("a", -3.0, 1),
            ("b", -4.0, 1),
            ("ab", -5.0, 1),
        ] {
            bytes_field(1, &piece(text, score, kind), &mut m);
        }
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(2, &mut trainer);
        varint(40 << 3, &mut trainer);
        varint(0, &mut trainer);
        varint(43 << 3, &mut trainer);
        varint(-1i64 as u64, &mut trainer);
        bytes_field(2, &trainer, &mut m);
        let mut normalizer = Vec::new();
        bytes_field(1, b"identity", &mut normalizer);
        varint(4 << 3, &mut normalizer);
        varint(0, &mut normalizer);
        bytes_field(3, &normalizer, &mut m);
        m
    }

    #[test]
    fn parses_pieces_and_specs_including_negative_ids() {
        let m = SentencePieceModel::parse(&model()).unwrap();
        assert_eq!(m.pieces.len(), 8);
        assert_eq!(m.pieces[3].piece, "\u{2581}a");
        assert_eq!(m.pieces[3].score, -1.0);
        assert_eq!(m.pieces[1].kind, PieceType::Control);
        assert_eq!((m.model_type, m.pad_id, m.bos_id), (2, -1, 1));
        assert!(!m.remove_extra_whitespaces && m.add_dummy_prefix);
        m.check_supported().unwrap();
    }

    #[test]
    fn merges_follow_scores_and_specials_become_added_tokens() {
        let m = SentencePieceModel::parse(&model()).unwrap();
        let options = ConvertOptions {
            add_bos: true,
            add_eos: false,
            added: vec![(8, "<pad>".into(), true)],
            ..Default::default()
        };
        let j = to_tokenizer_json(&m, &options).unwrap();
        assert_eq!(j["model"]["merges"], json!([["\u{2581}", "a"], ["a", "b"]]));
        let added: Vec<&str> = j["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["content"].as_str().unwrap())
            .collect();
        assert_eq!(added, ["<unk>", "<s>", "</s>", "<pad>"]);
        assert_eq!(
            j["post_processor"]["single"][0]["SpecialToken"]["id"],
            "<s>"
        );
    }

    #[test]
    fn user_defined_pieces_are_marked_for_sentencepieces_matching_unless_split_first() {
        let mut m = SentencePieceModel::parse(&model()).unwrap();
        m.pieces.push(Piece {
            piece: "<x>".into(),
            score: 0.0,
            kind: PieceType::UserDefined,
        });
        let added = |j: &Value| -> Vec<(String, bool)> {
            j["added_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["content"].as_str().unwrap().to_string(),
                        t["normalized"] == true,
                    )
                })
                .collect()
        };
        let j = to_tokenizer_json(&m, &ConvertOptions::default()).unwrap();
        assert_eq!(j["normalizer"]["user_defined_pieces"], "sentencepiece");
        assert_eq!(added(&j)[3], ("<x>".to_string(), true));
        assert!(added(&j)[..3].iter().all(|(_, normalized)| !normalized));

        let split = ConvertOptions {
            user_defined: UserDefinedPieces::SplitFirst,
            ..Default::default()
        };
        let j = to_tokenizer_json(&m, &split).unwrap();
        assert!(j["normalizer"].get("user_defined_pieces").is_none());
        assert_eq!(added(&j)[3], ("<x>".to_string(), false));

        // Made special by tokenizer_config.json: split first, as any special token.
        let special = ConvertOptions {
            added: vec![(8, "<x>".into(), true)],
            ..Default::default()
        };
        let j = to_tokenizer_json(&m, &special).unwrap();
        assert!(j["normalizer"].get("user_defined_pieces").is_none());

        // Unigram: the piece scores what sentencepiece's encoder gives it, 0.1 a byte after the first.
        m.model_type = 1;
        let j = to_tokenizer_json(&m, &ConvertOptions::default()).unwrap();
        assert_eq!(j["model"]["vocab"][8], json!(["<x>", 0.2f32]));
        assert_eq!(j["model"]["vocab"][3], json!(["\u{2581}a", -1.0]));
    }

    #[test]
    fn truncated_and_unsupported_models_are_refused() {
        let bytes = model();
        assert!(SentencePieceModel::parse(&bytes[..bytes.len() - 3]).is_err());
        let mut m = SentencePieceModel::parse(&bytes).unwrap();
        m.model_type = 3;
        assert!(m.check_supported().unwrap_err().contains("model type word"));
        m.model_type = 2;
        m.treat_whitespace_as_suffix = true;
        assert!(
            m.check_supported()
                .unwrap_err()
                .contains("treat_whitespace_as_suffix")
        );
    }
}
