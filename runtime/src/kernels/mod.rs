//! Compute kernels: a scalar reference for everything, and SIMD paths chosen once at start-up.
//!
//! Every SIMD ternary kernel returns exactly the scalar reference's i32 accumulators, and the
//! attention kernels its exact floats; the other float parts (activation scales, the output
//! matrix) may differ between paths by float reordering, within the bound README.md states and
//! `runtime/tests/model_consistency.rs` tests. A new instruction set is one more module beside
//! `avx2`/`avxvnni`/`avx512`/`neon` and one more [`Isa`] variant. Kernels take a [`KernelPath`],
//! which proves the CPU has the instructions.

pub mod activation;
pub mod aligned;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
pub mod bandwidth;
pub mod float;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod q4;
pub mod scalar;
mod ternary;

pub use ternary::{Packing, TernaryMatrix, scale_tile, ternary_matmul};

/// How far ahead of the byte being read the x86 weight kernels ask for weights (the ternary
/// kernels, the f16/bf16/i8 output matrix's rows for one token, and the q4 row kernel):
/// [`PREFETCH_AHEAD`] bytes into L1, and [`PREFETCH_FAR`] bytes into L2. The hardware
/// prefetcher alone left the loads' latency exposed: on the Xeon VM of BENCHMARKS.md, generation
/// with the 2B-4T shape (AVX-512, 2 threads) went from about 13 to 21.6 tokens/s for `tiled16` and
/// from 8 to 18 for `base3x16`; 512 bytes ahead was too close, 2 and 4 KiB the same. The output
/// matrix's rows, f16 or q4, read at about 70% of the probe's bandwidth without it; with them asked
/// for too, 4 KiB made generation 3–7% faster than 2 KiB in alternating runs (8 KiB no faster).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 4096;

/// How far ahead the same kernels also ask for weights into L2 only (`prefetcht1`), so that more
/// lines are on their way from memory than L1's fill buffers can track: generation read at most
/// about 80% of the bandwidth probe with [`PREFETCH_AHEAD`] alone (BENCHMARKS.md, twenty-fourth
/// session).
#[cfg(target_arch = "x86_64")]
const PREFETCH_FAR: usize = 4 * PREFETCH_AHEAD;

/// Ask for the weights [`PREFETCH_AHEAD`] bytes past `codes[at]` into L1 and [`PREFETCH_FAR`]
/// bytes past it into L2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(codes: &[u8], at: usize) {
    prefetch_stream(codes, at, 1)
}

/// [`prefetch`] for a stream read `1 / share` as fast as the weights it goes with (a q4 matrix's
/// scales), so asked for as far ahead in time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_stream(data: &[u8], at: usize, share: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1};
    hint::<_MM_HINT_T0>(data, at + PREFETCH_AHEAD / share);
    hint::<_MM_HINT_T1>(data, at + PREFETCH_FAR / share);
}

/// Ask for the cache line holding `data[at]` into L1.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line(data: &[u8], at: usize) {
    use std::arch::x86_64::_MM_HINT_T0;
    hint::<_MM_HINT_T0>(data, at)
}

/// Ask for the cache line holding `data[at]` with `_mm_prefetch` strategy `S` (a hint: an address
/// past the end of `data` is never dereferenced, and a prefetch never faults).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hint<const S: i32>(data: &[u8], at: usize) {
    let p = data.as_ptr().wrapping_add(at);
    // SAFETY: SSE is part of x86-64; a prefetch only hints the cache and never faults, whatever
    // the address.
    unsafe { std::arch::x86_64::_mm_prefetch::<S>(p.cast()) }
}

use bitnet_format::TernaryLayout;

/// An instruction set the kernels are written for. Only a name: whether this CPU has it is
/// checked when a [`KernelPath`] is made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust; the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 (`vpmaddubsw`/`vpmaddwd`).
    Avx2,
    /// x86-64 AVX2 with AVX-VNNI (256-bit VEX `vpdpbusd`: Intel Alder Lake and later, AMD Zen 5).
    AvxVnni,
    /// x86-64 AVX-512 F/BW with VNNI (`vpdpbusd`).
    Avx512,
    /// AArch64 NEON (`smlal`/`sadalp`), on every AArch64 CPU.
    Neon,
    /// AArch64 NEON with the dot-product extension (`sdot`, Armv8.2 `dotprod`).
    NeonDot,
}

/// A kernel path this CPU can run. It can only be obtained from detection
/// ([`KernelPath::detect`], [`KernelPath::available`]) or a checked constructor
/// ([`KernelPath::new`], [`KernelPath::parse`]), so no safe function taking one can reach an
/// instruction the CPU lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelPath(Isa);

/// Why a requested kernel path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "unknown kernel {0:?} (expected one of: scalar, avx2, avxvnni, avx512, neon, neon-dot)"
    )]
    Unknown(String),
    #[error("kernel {0} was requested but this CPU lacks {1}")]
    Unsupported(&'static str, String),
}

impl Isa {
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512,
        Isa::Neon,
        Isa::NeonDot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDot => "neon-dot",
        }
    }

    /// The CPU features this instruction set needs that this CPU lacks (empty: it can run it).
    pub fn missing_features(self) -> Vec<&'static str> {
        let needed: &[&'static str] = match self {
            Isa::Scalar => &[],
            Isa::Avx2 => &["avx2", "fma", "f16c"],
            Isa::AvxVnni => &["avx2", "fma", "f16c", "avxvnni"],
            Isa::Avx512 => &[
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vnni",
            ],
            Isa::Neon => &["neon"],
            Isa::NeonDot => &["neon", "dotprod"],
        };
        needed.iter().copied().filter(|f| !cpu_has(f)).collect()
    }

    /// Whether this CPU can run the instruction set.
    pub fn is_available(self) -> bool {
        self.missing_features().is_empty()
    }
}

/// Whether this CPU reports `feature` (named as `is_*_feature_detected!` names it); features of
/// another architecture are absent.
fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx2" => is_x86_feature_detected!("avx2"),
            "fma" => is_x86_feature_detected!("fma"),
            "f16c" => is_x86_feature_detected!("f16c"),
            "avx512f" => is_x86_feature_detected!("avx512f"),
            "avx512bw" => is_x86_feature_detected!("avx512bw"),
            "avx512vl" => is_x86_feature_detected!("avx512vl"),
            "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
            "avxvnni" => is_x86_feature_detected!("avxvnni"),
            _ => false,
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        match feature {
            "neon" => std::arch::is_aarch64_feature_detected!("neon"),
            "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
            _ => false,
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = feature;
        false
    }
}

impl KernelPath {
    /// The portable path, which every CPU runs.
    pub const SCALAR: KernelPath = KernelPath(Isa::Scalar);

    /// The path for `isa`, if this CPU can run it; the error names the features it lacks.
    pub fn new(isa: Isa) -> Result<Self, KernelError> {
        let missing = isa.missing_features();
        if missing.is_empty() {
            Ok(KernelPath(isa))
        } else {
            Err(KernelError::Unsupported(
                isa.name(),
                architecture_note(isa, &missing.join(", ")),
            ))
        }
    }

    pub fn isa(self) -> Isa {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Every path this CPU supports, in [`Isa::ALL`] order (tests and benchmarks cover each).
    pub fn available() -> Vec<KernelPath> {
        Isa::ALL
            .into_iter()
            .filter_map(|isa| KernelPath::new(isa).ok())
            .collect()
    }

    /// The fastest path this CPU supports.
    pub fn detect() -> Self {
        [
            Isa::Avx512,
            Isa::AvxVnni,
            Isa::Avx2,
            Isa::NeonDot,
            Isa::Neon,
        ]
        .into_iter()
        .find_map(|isa| KernelPath::new(isa).ok())
        .unwrap_or(KernelPath::SCALAR)
    }

    /// Parse a path name and check that this CPU can run it.
    pub fn parse(name: &str) -> Result<Self, KernelError> {
        let isa = Isa::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| KernelError::Unknown(name.to_string()))?;
        KernelPath::new(isa)
    }

    /// The path `name`s (a `--kernel` flag) if given, else [`KernelPath::from_env`].
    pub fn chosen(name: Option<&str>) -> Result<Self, KernelError> {
        match name {
            Some(name) => KernelPath::parse(name),
            None => KernelPath::from_env(),
        }
    }

    /// `BITNET_KERNEL` if set, else the fastest available path.
    pub fn from_env() -> Result<Self, KernelError> {
        match std::env::var("BITNET_KERNEL") {
            Ok(name) if !name.is_empty() => KernelPath::parse(&name),
            _ => Ok(KernelPath::detect()),
        }
    }

    /// Whether the ternary kernels of this path read `layout` directly (otherwise it is repacked at load).
    pub fn reads_layout(self, layout: TernaryLayout) -> bool {
        match (self.0, layout) {
            (Isa::Scalar, TernaryLayout::Tiled { .. } | TernaryLayout::Base3 { .. }) => true,
            (
                Isa::Avx2 | Isa::AvxVnni | Isa::Avx512,
                TernaryLayout::Tiled { tile_rows } | TernaryLayout::Base3 { tile_rows },
            ) => tile_rows == 16,
            // One q-register per 4 rows of a block: every tile height of the spec.
            (
                Isa::Neon | Isa::NeonDot,
                TernaryLayout::Tiled { tile_rows } | TernaryLayout::Base3 { tile_rows },
            ) => matches!(tile_rows, 4 | 8 | 16 | 32),
            (_, TernaryLayout::I2s { .. }) => false,
        }
    }

    /// How this path's ternary matrix-matrix kernel reads activations on matrices whose blocks are
    /// `block_bytes` columns wide, if grouped by [`activation::QuantizedActs::quantize_rows`] (the 256-bit
    /// x86 kernels; for the AVX-512 one, grouping measured at most 5% faster with `tiled16` and 6%
    /// slower with `base3x16`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    pub fn act_grouping(self, block_bytes: usize) -> Option<activation::Grouping> {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::AvxVnni => Some(avx2::grouping(block_bytes)),
            _ => None,
        }
    }

    /// The layout a tensor is repacked into when this path cannot read its own.
    pub fn preferred_layout(self) -> TernaryLayout {
        match self.0 {
            Isa::Neon | Isa::NeonDot => TernaryLayout::Tiled { tile_rows: 4 },
            _ => TernaryLayout::Tiled { tile_rows: 16 },
        }
    }
}

/// The missing features, and the architecture too when the instruction set is another one's.
fn architecture_note(isa: Isa, missing: &str) -> String {
    let arch = match isa {
        Isa::Scalar => return missing.to_string(),
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 => "x86_64",
        Isa::Neon | Isa::NeonDot => "aarch64",
    };
    if cfg!(target_arch = "x86_64") && arch == "x86_64"
        || cfg!(target_arch = "aarch64") && arch == "aarch64"
    {
        missing.to_string()
    } else {
        format!(
            "{missing} (an {arch} instruction set; this is {})",
            std::env::consts::ARCH
        )
    }
}
