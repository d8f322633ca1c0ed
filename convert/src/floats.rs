//! Little-endian floating-point tensor data as stored in safetensors files (f16, bf16, f32), read
//! element by element without copying or assuming alignment.

use half::{bf16, f16};
use safetensors::Dtype;

/// The floating-point element types a checkpoint's full-precision tensors may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    F16,
    Bf16,
    F32,
}

impl FloatKind {
    /// The float kind of a safetensors dtype, or `None` for integer and exotic types.
    pub fn from_dtype(dtype: Dtype) -> Option<Self> {
        match dtype {
            Dtype::F16 => Some(FloatKind::F16),
            Dtype::BF16 => Some(FloatKind::Bf16),
            Dtype::F32 => Some(FloatKind::F32),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatKind::F16 | FloatKind::Bf16 => 2,
            FloatKind::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FloatKind::F16 => "f16",
            FloatKind::Bf16 => "bf16",
            FloatKind::F32 => "f32",
        }
    }
}

/// A run of floats of one kind, borrowed from a (memory-mapped) file.
#[derive(Debug, Clone, Copy)]
pub struct Floats<'a> {
    pub kind: FloatKind,
    pub bytes: &'a [u8],
}

impl<'a> Floats<'a> {
    pub fn new(kind: FloatKind, bytes: &'a [u8]) -> Self {
        debug_assert_eq!(bytes.len() % kind.size(), 0);
        Floats { kind, bytes }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.kind.size()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Element `i`, converted exactly to f32.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        let b = self.bytes;
        match self.kind {
            FloatKind::F16 => f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
            FloatKind::Bf16 => bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
            FloatKind::F32 => {
                f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            }
        }
    }

    /// Elements `[start, end)`.
    pub fn slice(&self, start: usize, end: usize) -> Floats<'a> {
        let s = self.kind.size();
        Floats {
            kind: self.kind,
            bytes: &self.bytes[start * s..end * s],
        }
    }

    /// Call `f(index, value)` for every element, with the dtype dispatch outside the loop.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize, f32)) {
        match self.kind {
            FloatKind::F16 => {
                for (i, c) in self.bytes.chunks_exact(2).enumerate() {
                    f(i, f16::from_le_bytes([c[0], c[1]]).to_f32());
                }
            }
            FloatKind::Bf16 => {
                for (i, c) in self.bytes.chunks_exact(2).enumerate() {
                    f(
                        i,
                        f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16),
                    );
                }
            }
            FloatKind::F32 => {
                for (i, c) in self.bytes.chunks_exact(4).enumerate() {
                    f(i, f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                }
            }
        }
    }

    /// All elements as f32.
    pub fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Index of the first NaN or infinite element, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        let mut any = false;
        self.for_each(|_, x| any |= !x.is_finite());
        if any {
            self.iter().position(|x| !x.is_finite())
        } else {
            None
        }
    }
}
