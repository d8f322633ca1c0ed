//! Compute kernels: a scalar reference for everything, and SIMD paths chosen once at start-up.
//!
//! Every SIMD ternary kernel returns exactly the scalar reference's i32 accumulators, so logits are
//! identical whichever path runs. A new instruction set is one more module beside `avx2`/`avx512`/
//! `neon` and one more [`KernelPath`] variant.

pub mod activation;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod bandwidth;
pub mod float;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod q4;
pub mod scalar;
mod ternary;

pub use ternary::{TernaryMatrix, ternary_matmul};

use bitnet_format::TernaryLayout;

/// An instruction-set path for the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Portable Rust; the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 (`vpmaddubsw`/`vpmaddwd`).
    Avx2,
    /// x86-64 AVX-512 F/BW with VNNI (`vpdpbusd`).
    Avx512,
    /// AArch64 NEON (`smlal`/`sadalp`), on every AArch64 CPU.
    Neon,
    /// AArch64 NEON with the dot-product extension (`sdot`, Armv8.2 `dotprod`).
    NeonDot,
}

/// Why a requested kernel path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("unknown kernel {0:?} (expected one of: scalar, avx2, avx512, neon, neon-dot)")]
    Unknown(String),
    #[error("kernel {0} was requested but this CPU lacks {1}")]
    Unsupported(&'static str, &'static str),
}

impl KernelPath {
    pub const ALL: [KernelPath; 5] = [
        KernelPath::Scalar,
        KernelPath::Avx2,
        KernelPath::Avx512,
        KernelPath::Neon,
        KernelPath::NeonDot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Neon => "neon",
            KernelPath::NeonDot => "neon-dot",
        }
    }

    /// The CPU features this path needs, as the CPU reports them.
    fn features(self) -> &'static str {
        match self {
            KernelPath::Scalar => "",
            KernelPath::Avx2 => "avx2, fma, f16c",
            KernelPath::Avx512 => "avx512f, avx512bw, avx512vnni, fma, f16c",
            KernelPath::Neon => "neon (an AArch64 CPU)",
            KernelPath::NeonDot => "neon, dotprod (an AArch64 CPU)",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                KernelPath::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            KernelPath::NeonDot => {
                KernelPath::Neon.is_available()
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            // Paths of another architecture.
            _ => false,
        }
    }

    /// Every path this CPU supports, in [`KernelPath::ALL`] order (tests and benchmarks cover each).
    pub fn available() -> Vec<KernelPath> {
        KernelPath::ALL
            .into_iter()
            .filter(|p| p.is_available())
            .collect()
    }

    /// The fastest path this CPU supports.
    pub fn detect() -> Self {
        [
            KernelPath::Avx512,
            KernelPath::Avx2,
            KernelPath::NeonDot,
            KernelPath::Neon,
        ]
        .into_iter()
        .find(|p| p.is_available())
        .unwrap_or(KernelPath::Scalar)
    }

    /// Parse a path name and check that this CPU can run it.
    pub fn parse(name: &str) -> Result<Self, KernelError> {
        let path = KernelPath::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| KernelError::Unknown(name.to_string()))?;
        if !path.is_available() {
            return Err(KernelError::Unsupported(path.name(), path.features()));
        }
        Ok(path)
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
        match (self, layout) {
            (KernelPath::Scalar, TernaryLayout::Tiled { .. }) => true,
            (KernelPath::Avx2 | KernelPath::Avx512, TernaryLayout::Tiled { tile_rows }) => {
                tile_rows == 16
            }
            // One q-register per 4 rows of a block: every tile height of the spec.
            (KernelPath::Neon | KernelPath::NeonDot, TernaryLayout::Tiled { tile_rows }) => {
                matches!(tile_rows, 4 | 8 | 16 | 32)
            }
            (_, TernaryLayout::I2s { .. }) => false,
        }
    }

    /// The layout a tensor is repacked into when this path cannot read its own.
    pub fn preferred_layout(self) -> TernaryLayout {
        match self {
            KernelPath::Neon | KernelPath::NeonDot => TernaryLayout::Tiled { tile_rows: 4 },
            _ => TernaryLayout::Tiled { tile_rows: 16 },
        }
    }
}
