//! Tensor encodings and ternary layouts, and the byte sizes they imply (SPEC.md §5).
//!
//! The header stores encodings as plain strings and parameter objects ([`LayoutParams`]); this module
//! turns them into the typed [`Encoding`], refusing anything this version cannot decode.

use serde::{Deserialize, Serialize};

/// Alignment of every tensor and of the data section, in bytes.
pub const ALIGN: u64 = 64;

/// Round `n` up to the next multiple of [`ALIGN`].
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// How a tensor's bytes are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    F32,
    F16,
    Bf16,
    /// Signed 8-bit values with one f32 scale per row: `value = q · scale[row]`.
    I8Row,
    /// 4-bit codes in blocks of [`Q4_BLOCK`] columns, one f16 scale `d` per block:
    /// `value = (n - 8) · d` (GGML's Q4_0 arithmetic); all scales first, then the codes.
    Q4B32,
    /// Ternary weights {-1, 0, +1} with one f32 per-tensor scale, in the given layout.
    Ternary(TernaryLayout),
}

/// The arrangement of ternary codes in a tensor's bytes (SPEC.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TernaryLayout {
    /// bitnet.cpp's I2_S: the flattened tensor in blocks of `block` elements (128 as written by x86
    /// builds, 64 by ARM builds), most significant bit pair first, f32 scale after the codes.
    I2s { block: u32 },
    /// Tiles of `tile_rows` rows; each block of 16 columns of a tile is `tile_rows · 4` bytes in which
    /// byte `4r + j` holds columns `j, j+4, j+8, j+12` of row `r`, least significant pair first.
    /// f32 scale in the tensor's first 64 bytes.
    Tiled { tile_rows: u32 },
    /// The tiles of [`TernaryLayout::Tiled`] with blocks of 20 columns, five codes per byte as one
    /// base-3 fixed-point number (1.6 bits per weight): byte `4r + j` of a block holds columns
    /// `j, j+4, j+8, j+12, j+16` of row `r`, most significant digit first.
    Base3 { tile_rows: u32 },
}

/// Columns per block (one f16 scale each) of a `q4_b32` tensor.
pub const Q4_BLOCK: u64 = 32;

/// Where the codes of a `q4_b32` tensor of `elements` values start: after its block scales
/// (2 bytes per block), padded to [`ALIGN`].
pub fn q4_codes_offset(elements: u64) -> u64 {
    (elements / Q4_BLOCK * 2).next_multiple_of(ALIGN)
}

/// Tile heights the tiled layout allows.
pub const TILE_ROWS_ALLOWED: [u32; 4] = [4, 8, 16, 32];
/// I2_S block lengths the i2s layout allows.
pub const I2S_BLOCKS_ALLOWED: [u32; 2] = [64, 128];
/// Columns per block in the tiled layout.
pub const TILED_BLOCK_K: u32 = 16;
/// Columns per block in the base3 layout: five codes per byte.
pub const BASE3_BLOCK_K: u32 = 20;
/// Consecutive columns sharing one byte lane group in the tiled layout.
pub const TILED_LANE_K: u32 = 4;
/// Bytes reserved for the per-tensor scale at the head of a tiled tensor.
pub const TILED_SCALE_BYTES: u64 = 64;
/// Bytes after the codes of an i2s tensor: the f32 scale and 28 zero bytes.
pub const I2S_TAIL_BYTES: u64 = 32;

/// The parameter object stored under `"layout"` for ternary tensors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutParams {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tile_rows: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane_k: Option<u32>,
    pub code: String,
    pub bit_order: String,
    pub scale: String,
}

impl Encoding {
    /// The name stored in the header's `"encoding"` field.
    pub fn name(&self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::F16 => "f16",
            Encoding::Bf16 => "bf16",
            Encoding::I8Row => "i8_row",
            Encoding::Q4B32 => "q4_b32",
            Encoding::Ternary(_) => "ternary",
        }
    }

    /// A short human label, e.g. `ternary/tiled16` or `f16`.
    pub fn label(&self) -> String {
        match self {
            Encoding::Ternary(l) => format!("ternary/{}", l.label()),
            other => other.name().to_string(),
        }
    }

    /// The layout parameter object, present only for ternary tensors.
    pub fn layout_params(&self) -> Option<LayoutParams> {
        match self {
            Encoding::Ternary(l) => Some(l.params()),
            _ => None,
        }
    }

    /// Parse the header's `"encoding"` and `"layout"` fields. `Err` holds the reason.
    pub fn from_header(name: &str, layout: Option<&LayoutParams>) -> Result<Self, String> {
        let plain = match name {
            "f32" => Encoding::F32,
            "f16" => Encoding::F16,
            "bf16" => Encoding::Bf16,
            "i8_row" => Encoding::I8Row,
            "q4_b32" => Encoding::Q4B32,
            "ternary" => {
                let params = layout.ok_or("ternary tensor without a \"layout\" object")?;
                return TernaryLayout::from_params(params).map(Encoding::Ternary);
            }
            other => return Err(format!("unknown encoding {other:?}")),
        };
        if layout.is_some() {
            return Err(format!("encoding {name} takes no \"layout\" object"));
        }
        Ok(plain)
    }

    /// The exact byte length of a tensor of this encoding and logical shape, or why the shape is
    /// not allowed.
    pub fn byte_len(&self, shape: &[u64]) -> Result<u64, String> {
        let overflow = || "shape is too large".to_string();
        if shape.is_empty() || shape.contains(&0) {
            return Err(format!(
                "shape {shape:?} must have at least one dimension, each at least 1"
            ));
        }
        let elements = element_count(shape).ok_or_else(overflow)?;
        match self {
            Encoding::F32 => elements.checked_mul(4).ok_or_else(overflow),
            Encoding::F16 | Encoding::Bf16 => elements.checked_mul(2).ok_or_else(overflow),
            Encoding::I8Row => {
                let [rows, _cols] = matrix_dims(shape)?;
                let scales =
                    align_up(rows.checked_mul(4).ok_or_else(overflow)?).ok_or_else(overflow)?;
                scales.checked_add(elements).ok_or_else(overflow)
            }
            Encoding::Q4B32 => {
                let [_rows, cols] = matrix_dims(shape)?;
                if cols % Q4_BLOCK != 0 {
                    return Err(format!(
                        "q4_b32 needs columns in whole blocks of {Q4_BLOCK}, not {cols}"
                    ));
                }
                // 2 bytes of scale and 16 of codes per 32 elements; `elements` ≤ 2^48 keeps both in range.
                Ok(q4_codes_offset(elements) + elements / 2)
            }
            Encoding::Ternary(layout) => {
                let [rows, cols] = matrix_dims(shape)?;
                layout.byte_len(rows, cols).ok_or_else(overflow)
            }
        }
    }
}

/// Largest element count any tensor may have (2^48), so sizes never overflow.
pub const MAX_ELEMENTS: u64 = 1 << 48;

/// Product of the dimensions, or `None` past [`MAX_ELEMENTS`].
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

fn matrix_dims(shape: &[u64]) -> Result<[u64; 2], String> {
    match shape {
        [rows, cols] => Ok([*rows, *cols]),
        _ => Err(format!(
            "shape {shape:?} must be two dimensions [rows, columns]"
        )),
    }
}

impl TernaryLayout {
    /// The best layout for this machine's kernels is chosen by the runtime; this is the converter's
    /// default: 16-row tiles, read directly by the AVX2 and AVX-512 kernels.
    pub const DEFAULT: TernaryLayout = TernaryLayout::Tiled { tile_rows: 16 };

    /// A short name: `i2s128`, `i2s64`, `tiled16`, `tiled4`, ...
    pub fn label(&self) -> String {
        match self {
            TernaryLayout::I2s { block } => format!("i2s{block}"),
            TernaryLayout::Tiled { tile_rows } => format!("tiled{tile_rows}"),
            TernaryLayout::Base3 { tile_rows } => format!("base3x{tile_rows}"),
        }
    }

    /// Parse a label as printed by [`TernaryLayout::label`]; `i2s` alone means `i2s128`.
    pub fn from_label(label: &str) -> Option<Self> {
        let layout = if let Some(rows) = label.strip_prefix("base3x") {
            TernaryLayout::Base3 {
                tile_rows: rows.parse().ok()?,
            }
        } else if label == "i2s" {
            TernaryLayout::I2s { block: 128 }
        } else if let Some(block) = label.strip_prefix("i2s") {
            TernaryLayout::I2s {
                block: block.parse().ok()?,
            }
        } else {
            TernaryLayout::Tiled {
                tile_rows: label.strip_prefix("tiled")?.parse().ok()?,
            }
        };
        layout.check().ok().map(|_| layout)
    }

    fn check(&self) -> Result<(), String> {
        match *self {
            TernaryLayout::I2s { block } if !I2S_BLOCKS_ALLOWED.contains(&block) => Err(format!(
                "i2s block {block} is not one of {I2S_BLOCKS_ALLOWED:?}"
            )),
            TernaryLayout::Tiled { tile_rows } | TernaryLayout::Base3 { tile_rows }
                if !TILE_ROWS_ALLOWED.contains(&tile_rows) =>
            {
                Err(format!(
                    "tile_rows {tile_rows} is not one of {TILE_ROWS_ALLOWED:?}"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The parameter object written to the header.
    pub fn params(&self) -> LayoutParams {
        match *self {
            TernaryLayout::I2s { block } => LayoutParams {
                kind: "i2s".into(),
                block: Some(block),
                tile_rows: None,
                block_k: None,
                lane_k: None,
                code: "w+1".into(),
                bit_order: "msb_first".into(),
                scale: "f32_tail".into(),
            },
            TernaryLayout::Tiled { tile_rows } => LayoutParams {
                kind: "tiled".into(),
                block: None,
                tile_rows: Some(tile_rows),
                block_k: Some(TILED_BLOCK_K),
                lane_k: Some(TILED_LANE_K),
                code: "w+1".into(),
                bit_order: "lsb_first".into(),
                scale: "f32_head".into(),
            },
            TernaryLayout::Base3 { tile_rows } => LayoutParams {
                kind: "base3".into(),
                block: None,
                tile_rows: Some(tile_rows),
                block_k: Some(BASE3_BLOCK_K),
                lane_k: Some(TILED_LANE_K),
                code: "w+1".into(),
                bit_order: "base3_msd_first".into(),
                scale: "f32_head".into(),
            },
        }
    }

    /// Parse and check a parameter object: every field must be present and hold a supported value.
    pub fn from_params(p: &LayoutParams) -> Result<Self, String> {
        let layout = match p.kind.as_str() {
            "i2s" => TernaryLayout::I2s {
                block: p.block.ok_or("i2s layout without \"block\"")?,
            },
            "tiled" => TernaryLayout::Tiled {
                tile_rows: p.tile_rows.ok_or("tiled layout without \"tile_rows\"")?,
            },
            "base3" => TernaryLayout::Base3 {
                tile_rows: p.tile_rows.ok_or("base3 layout without \"tile_rows\"")?,
            },
            other => return Err(format!("unknown ternary layout kind {other:?}")),
        };
        layout.check()?;
        let expected = layout.params();
        for (field, got, want) in [
            ("block", p.block, expected.block),
            ("tile_rows", p.tile_rows, expected.tile_rows),
            ("block_k", p.block_k, expected.block_k),
            ("lane_k", p.lane_k, expected.lane_k),
        ] {
            if got != want {
                return Err(format!("{} has {field} {got:?}, expected {want:?}", p.kind));
            }
        }
        for (field, got, want) in [
            ("code", &p.code, &expected.code),
            ("bit_order", &p.bit_order, &expected.bit_order),
            ("scale", &p.scale, &expected.scale),
        ] {
            if got != want {
                return Err(format!("{} has {field} {got:?}, expected {want:?}", p.kind));
            }
        }
        Ok(layout)
    }

    /// Byte length of a `rows × cols` tensor in this layout (`None` on overflow).
    pub fn byte_len(&self, rows: u64, cols: u64) -> Option<u64> {
        match *self {
            TernaryLayout::I2s { block } => {
                let n = rows.checked_mul(cols)?;
                let blocks = n.div_ceil(block as u64);
                blocks
                    .checked_mul(block as u64 / 4)?
                    .checked_add(I2S_TAIL_BYTES)
            }
            TernaryLayout::Tiled { .. } | TernaryLayout::Base3 { .. } => {
                let g = self.tiled_geometry(rows, cols);
                g.tiles
                    .checked_mul(g.k_blocks)?
                    .checked_mul(g.block_bytes)?
                    .checked_add(TILED_SCALE_BYTES)
            }
        }
    }

    /// Tile geometry of a tiled or base3 layout (meaningless for i2s).
    pub fn tiled_geometry(&self, rows: u64, cols: u64) -> TiledGeometry {
        let (tile_rows, block_k) = match *self {
            TernaryLayout::Tiled { tile_rows } => (tile_rows as u64, TILED_BLOCK_K as u64),
            TernaryLayout::Base3 { tile_rows } => (tile_rows as u64, BASE3_BLOCK_K as u64),
            TernaryLayout::I2s { .. } => (1, TILED_BLOCK_K as u64),
        };
        TiledGeometry {
            tile_rows,
            tiles: rows.div_ceil(tile_rows),
            k_blocks: cols.div_ceil(block_k),
            block_k,
            block_bytes: tile_rows * 4,
        }
    }
}

/// How a tiled tensor's codes are arranged: `tiles × k_blocks` blocks of `block_bytes` each, tile-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TiledGeometry {
    pub tile_rows: u64,
    pub tiles: u64,
    pub k_blocks: u64,
    /// Columns per block: 16 (tiled) or 20 (base3).
    pub block_k: u64,
    pub block_bytes: u64,
}

impl TiledGeometry {
    /// Bytes of one tile (all its K blocks).
    pub fn tile_bytes(&self) -> u64 {
        self.k_blocks * self.block_bytes
    }
}
