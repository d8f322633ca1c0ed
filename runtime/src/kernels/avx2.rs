//! AVX2 kernels, and the 256-bit ternary kernel that the AVX2 and AVX-VNNI paths share
//! ([`ternary_kernel!`], instantiated once per multiply-accumulate [`Mac`], generic over the
//! packing's [`Planes`]).
//!
//! The ternary kernel reads 16-row tiles as two 32-byte halves (rows 0–7, 8–15). A half splits into
//! `P` planes of unsigned codes `t + 1` (four by shift-and-mask for `tiled`, five base-3 digits for
//! `base3`), plane `p` holding in 32-bit lane `r` row `r`'s codes at columns `4p .. 4p+3`, and
//! `Σ q` is subtracted at the end to undo the `+ 1`. Tokens are taken [`WIDE_BLOCK`] (then 16) at
//! a time by broadcasting each row's code quad against vectors of 8 tokens' activation quads, the
//! tile unpacked once per run of blocks for all of them; the rest [`TOKEN_BLOCK`], 4, 2 and 1 at a
//! time the other way round, each plane multiplied by one token's broadcast activation quad and
//! each half unpacked once for the block's tokens (one token is the matrix-vector case).
//! Activations are read grouped ([`grouping`], [`QuantizedActs::with_grouped`]).

use std::arch::x86_64::*;
use std::ops::Range;

use super::activation::{Grouping, QuantizedActs};
use super::attention::CacheRows;
use super::float::FloatKind;
use super::ternary::TernaryMatrix;

/// Tokens per register block of the narrow kernel: eight accumulators (one per token, for the half
/// being read), the half's four planes and a few temporaries fill the 16 ymm registers. It ran
/// faster than four tokens with both halves at once, which spilled registers.
pub(super) const TOKEN_BLOCK: usize = 8;

/// Tokens per group of the wide kernel: four vectors of 8 tokens' quads, each broadcast code quad
/// multiplied into all four.
pub(super) const WIDE_BLOCK: usize = 32;

/// Tokens of the wide kernel's smallest group, two vectors: every group is [`WIDE_BLOCK`] tokens
/// but a last one of this many.
pub(super) const WIDE_LAST: usize = WIDE_BLOCK / 2;

/// How the ternary kernels read activations ([`QuantizedActs::with_grouped`]) on matrices whose
/// blocks are `block_bytes` columns wide: groups of [`WIDE_BLOCK`] and [`WIDE_LAST`] tokens by
/// quad, so that a quad's tokens are four or two vectors; smaller groups by block, a token's quads
/// side by side (by quad, 8 tokens ran 3–5% slower in the kernel benchmark).
pub(super) fn grouping(block_bytes: usize) -> Grouping {
    Grouping {
        block: WIDE_BLOCK,
        quads_from: WIDE_LAST,
        block_bytes,
    }
}

/// Planes per run of the wide kernel, at most: a run's planes (4 KiB for 16 rows) and a group's
/// quads for them (8 KiB for 32 tokens) stay in L1 while every group reads them. Half as many ran
/// 1–2.5% slower on Zen 3, whose L1 holds 32 KiB.
pub(super) const RUN_PLANES: usize = 64;

std::thread_local! {
    /// Each thread's unpacked run of a tile and the wide kernel's accumulators, reused across calls.
    pub(super) static WIDE_SUMS: std::cell::RefCell<(Vec<__m256i>, Vec<i32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One instruction set's multiply-accumulate for [`ternary_kernel!`].
///
/// Every method is `unsafe` only because it is compiled with the path's target features (so that
/// it inlines into the kernel); callers must run on a CPU that has them.
pub(super) trait Mac {
    /// Planes [`Mac::step`] may add into one accumulator before [`Mac::widen`].
    const RUN_PLANES: usize;
    /// Add, in each row's lanes, the products of a half's `P` code planes `c` with the block's
    /// broadcast activation quads `a`.
    unsafe fn step<const P: usize>(acc: &mut __m256i, c: &[__m256i; P], a: &[__m256i; P]);
    /// [`Mac::step`] for a group of fewer than [`TOKEN_BLOCK`] tokens, whose accumulators are too
    /// few chains to keep the unit busy: may trade instructions for shorter dependency chains.
    unsafe fn step_alone<const P: usize>(acc: &mut __m256i, c: &[__m256i; P], a: &[__m256i; P]);
    /// The accumulator as one i32 per row.
    unsafe fn widen(acc: __m256i) -> __m256i;
    /// Vectors of 8 tokens that one pass of the wide kernel multiplies each broadcast code quad
    /// into, at most.
    const WIDE_VECTORS: usize;
    /// Accumulators of one pass of the wide kernel, at most (rows · vectors): enough independent
    /// chains to keep the multiply unit busy, few enough to leave registers for the pass's
    /// activation vectors and broadcasts among the 16.
    const WIDE_ACCUMULATORS: usize;
}

/// AVX2: `vpmaddubsw` multiplies unsigned codes `u = t + 1 ∈ {0, 1, 2}` by activations
/// `q ∈ [-128, 127]` and adds adjacent pairs into i16 lanes (each pair within [-512, 508], so it
/// never saturates); the planes' pairs are added into an i16 accumulator, and `vpmaddwd` by ones
/// widens each row's two lanes into one i32.
///
/// The bound on [`Mac::RUN_PLANES`]: an i16 lane gains per plane 2 products `u · q`, each in
/// [2 · -128, 2 · 127] = [-256, 254], so within [-512, 508]; after 64 planes (16 blocks of `tiled`,
/// 12 of `base3`, rounding down) it is within [-32768, 32512], which i16 holds exactly (65 planes
/// could reach -33280). The adds wrap, so only the run's total needs to fit.
/// `runtime/tests/kernel_conformance.rs` runs these extremes.
pub(super) struct Maddubs;

impl Mac for Maddubs {
    const RUN_PLANES: usize = 64;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step<const P: usize>(acc: &mut __m256i, c: &[__m256i; P], a: &[__m256i; P]) {
        let products: [__m256i; P] = std::array::from_fn(|p| _mm256_maddubs_epi16(c[p], a[p]));
        // Pairwise, so the adds do not form one chain.
        let mut sum = products;
        let mut n = P;
        while n > 1 {
            for i in 0..n / 2 {
                sum[i] = _mm256_add_epi16(sum[2 * i], sum[2 * i + 1]);
            }
            if n % 2 == 1 {
                sum[n / 2] = sum[n - 1];
            }
            n = n.div_ceil(2);
        }
        *acc = _mm256_add_epi16(*acc, sum[0]);
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step_alone<const P: usize>(acc: &mut __m256i, c: &[__m256i; P], a: &[__m256i; P]) {
        // SAFETY: same features.
        unsafe { Self::step(acc, c, a) }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn widen(acc: __m256i) -> __m256i {
        _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
    }

    /// Each accumulator's chain is a one-cycle add, so eight chains keep `vpmaddubsw` busy, and
    /// four vectors per broadcast save loads.
    const WIDE_VECTORS: usize = 4;
    const WIDE_ACCUMULATORS: usize = 8;
}

/// How a packing's 32 bytes split into `P` code planes (plane `p`: the codes of columns
/// `4p .. 4p+3` of each block, in `vpdpbusd` operand shape). `unsafe` only because compiled with
/// AVX2: callers must run on a CPU that has it.
pub(super) trait Planes<const P: usize> {
    /// Whether these are [`Bits2`]'s 2-bit planes, which one token reads with fewer
    /// instructions than [`Planes::planes`] takes (`lone_bits2` in [`ternary_kernel!`]).
    const BITS2: bool;

    unsafe fn planes(v: __m256i) -> [__m256i; P];
}

/// The four 2-bit code planes of `$v` (SPEC.md §6.3) for one vector width: shift and mask.
macro_rules! bits2_planes {
    ($v:expr, $set1:ident, $and:ident, $srli16:ident) => {{
        let mask = $set1(3);
        [
            $and($v, mask),
            $and($srli16::<2>($v), mask),
            $and($srli16::<4>($v), mask),
            $and($srli16::<6>($v), mask),
        ]
    }};
}
pub(super) use bits2_planes;

/// `tiled`: four 2-bit fields per byte.
pub(super) struct Bits2;

impl Planes<4> for Bits2 {
    const BITS2: bool = true;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn planes(v: __m256i) -> [__m256i; 4] {
        bits2_planes!(v, _mm256_set1_epi8, _mm256_and_si256, _mm256_srli_epi16)
    }
}

/// `3x mod 256` in every byte of `$x`, as two byte adds. The empty `asm!` hides the first sum, which
/// LLVM would otherwise fold with the second into a byte multiply by 3 and expand into widening
/// multiplies, packs and blends.
macro_rules! times3 {
    ($x:expr, $add8:ident, $reg:ident) => {{
        let x = $x;
        let mut twice = $add8(x, x);
        // SAFETY: the template is empty: the register is read and written back unchanged.
        unsafe {
            std::arch::asm!("/* {0} */", inout($reg) twice, options(pure, nomem, nostack, preserves_flags))
        };
        $add8(twice, x)
    }};
}
pub(super) use times3;

/// `base3`: five base-3 digits per byte (SPEC.md §6.4). Digit `p` of byte `b` is `[x ≥ 86] + [x ≥
/// 171]` with `x = b·3^p mod 256`. AVX2 compares bytes only as signed numbers, so the kernel works on
/// `s = x − 128` (one xor per vector): `x ↦ 3x mod 256` is then `s ↦ 3s mod 256` as well (`3·128 ≡
/// 128`), and the two tests are `s > −43` and `s > 42`, each −1 where true, so the digit is `0 − m₁
/// − m₂`. Six instructions per plane; exact for every byte.
pub(super) struct Base3;

impl Planes<5> for Base3 {
    const BITS2: bool = false;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn planes(v: __m256i) -> [__m256i; 5] {
        let (above85, above170) = (_mm256_set1_epi8(-43), _mm256_set1_epi8(42));
        let zero = _mm256_setzero_si256();
        let mut s = _mm256_xor_si256(v, _mm256_set1_epi8(i8::MIN));
        std::array::from_fn(|_| {
            let m1 = _mm256_cmpgt_epi8(s, above85);
            let m2 = _mm256_cmpgt_epi8(s, above170);
            let digit = _mm256_sub_epi8(_mm256_sub_epi8(zero, m1), m2);
            s = times3!(s, _mm256_add_epi8, ymm_reg);
            digit
        })
    }
}

/// Defines `ternary_tiles` (see [`super::ternary_matmul`]) for one [`Mac`], compiled with
/// `$features`: one copy of the kernel per instruction set, so that each is built with exactly the
/// features its CPU is checked for (a generic function would be compiled with one set for both).
macro_rules! ternary_kernel {
    ($features:literal, $mac:ty) => {
        /// See [`super::ternary_matmul`]; `w.tile_rows` must be 16 and `U` unpack `w.packing`
        /// into `P` planes.
        ///
        /// # Safety
        /// The CPU must support this module's instruction set, and the slice lengths must be as
        /// `ternary_matmul` asserts.
        #[target_feature(enable = $features)]
        pub unsafe fn ternary_tiles<const P: usize, U: $crate::kernels::avx2::Planes<P>>(
            w: &TernaryMatrix,
            x: &QuantizedActs,
            tiles: Range<usize>,
            out: &mut [i32],
        ) {
            use $crate::kernels::activation::token_groups;
            use $crate::kernels::avx2::{
                RUN_PLANES, TOKEN_BLOCK, WIDE_BLOCK, WIDE_LAST, WIDE_SUMS, grouping,
            };
            let (k_blocks, tile_bytes, tokens, kpad) =
                (w.k_blocks(), w.tile_bytes(), x.tokens, x.kpad);
            let run_blocks =
                (RUN_PLANES.min(<$mac as $crate::kernels::avx2::Mac>::RUN_PLANES) / P).max(1);
            // Tokens taken by `wide_group` (groups of 32, then perhaps one of 16); the rest go 8, 4,
            // 2 and 1 at a time.
            let wide = tokens - tokens % WIDE_LAST;
            let (mut planes, mut sums) = WIDE_SUMS.take();
            x.with_grouped(grouping(4 * P), |acts| {
                for (i, tile) in tiles.enumerate() {
                    let codes = &w.codes[tile * tile_bytes..(tile + 1) * tile_bytes];
                    let out_tile = &mut out[i * tokens * 16..(i + 1) * tokens * 16];
                    if wide > 0 {
                        sums.clear();
                        sums.resize(wide * 16, 0);
                        for run in (0..k_blocks).step_by(run_blocks) {
                            let blocks = run_blocks.min(k_blocks - run);
                            // Every plane is written below: no clearing.
                            planes.resize(blocks * 2 * P, _mm256_setzero_si256());
                            for (j, planes) in planes.chunks_exact_mut(P).enumerate() {
                                let half = run * 2 + j;
                                // The next run's block (or the next tile's), which the groups'
                                // products leave ample time to arrive.
                                if j % 2 == 0 {
                                    $crate::kernels::prefetch_line(
                                        codes,
                                        (half / 2 + run_blocks) * 64,
                                    );
                                }
                                // SAFETY: `half < 2 · k_blocks`, so its 32 bytes are in `codes`;
                                // `U` is compiled for this function's features.
                                planes.copy_from_slice(&unsafe {
                                    U::planes(_mm256_loadu_si256(
                                        codes.as_ptr().add(half * 32).cast(),
                                    ))
                                });
                            }
                            for (t, m) in token_groups(wide, WIDE_BLOCK) {
                                let quads = blocks * P;
                                let a = &acts[t * kpad + run * 4 * P * m..][..quads * 4 * m];
                                let sums = &mut sums[t * 16..(t + m) * 16];
                                // SAFETY: same features; `planes` holds the run's `2P · blocks`
                                // planes, `a` its quads of `m` tokens, `sums` 16 rows of `m`.
                                unsafe { wide_group::<P>(&planes, blocks, a, sums) };
                            }
                        }
                        for (t0, m) in token_groups(wide, WIDE_BLOCK) {
                            let sums = &sums[t0 * 16..(t0 + m) * 16];
                            for (i, r) in (0..m).step_by(8).flat_map(|i| [(i, 0), (i, 8)]) {
                                let at = (t0 + i) * 16 + r;
                                // SAFETY: rows `r .. r + 8` of tokens `i .. i + 8` of the group:
                                // in `sums` (16 rows of `m`), `x.sum` and `out_tile`.
                                unsafe {
                                    $crate::kernels::avx2::store_transposed(
                                        &sums[r * m + i..],
                                        m,
                                        &x.sum[t0 + i..t0 + i + 8],
                                        &mut out_tile[at..at + 7 * 16 + 8],
                                        16,
                                    )
                                };
                            }
                        }
                    }
                    for (t, m) in token_groups(tokens - wide, TOKEN_BLOCK) {
                        let t = wide + t;
                        let a = &acts[t * kpad..(t + m) * kpad];
                        let o = &mut out_tile[t * 16..(t + m) * 16];
                        // SAFETY: same CPU features as this function; `codes` holds `k_blocks`
                        // blocks of 64 bytes, `a` the group's `m · 4P · k_blocks` grouped codes,
                        // `x.sum[t..]` its `m` sums and `o` its `m · 16` accumulators.
                        unsafe { group::<P, U>(m, codes, k_blocks, a, &x.sum[t..t + m], o) };
                    }
                }
            });
            WIDE_SUMS.set((planes, sums));
        }

        /// A group of `m` ([`WIDE_BLOCK`](crate::kernels::avx2::WIDE_BLOCK) or
        /// [`WIDE_LAST`](crate::kernels::avx2::WIDE_LAST)) tokens against one run of a tile's
        /// unpacked `planes` (`blocks` blocks, half by half), added into `sums` (16 rows of `m`
        /// tokens, row-major). The roles of the narrow kernel turn around: each row's code quad is
        /// broadcast from the planes and multiplied into vectors of 8 tokens' activation quads, so
        /// that a load feeds several products instead of one and the tile is unpacked once per run
        /// for every group of tokens. The group goes in passes of [`Mac::WIDE_VECTORS`] vectors and
        /// as many rows as [`Mac::WIDE_ACCUMULATORS`] allows, the 16 rows split evenly.
        #[target_feature(enable = $features)]
        unsafe fn wide_group<const P: usize>(
            planes: &[__m256i],
            blocks: usize,
            acts: &[i8],
            sums: &mut [i32],
        ) {
            use $crate::kernels::avx2::{Mac, WIDE_BLOCK, WIDE_LAST};
            type K = $mac;
            let m = sums.len() / 16;
            let vectors = K::WIDE_VECTORS.min(m / 8);
            let passes = 16usize.div_ceil(K::WIDE_ACCUMULATORS / vectors);
            for v0 in (0..m / 8).step_by(vectors) {
                let mut first = 0;
                for pass in 0..passes {
                    let rows = (16 - first) / (passes - pass);
                    let args = (planes, blocks, acts, first, v0, &mut *sums);
                    // SAFETY: same features; `first + rows <= 16` and `v0 + vectors <= m / 8`.
                    unsafe {
                        match (m, vectors, rows) {
                            (WIDE_BLOCK, 4, 2) => wide_pass::<P, WIDE_BLOCK, 4, 2>(args),
                            (WIDE_LAST, 2, 4) => wide_pass::<P, WIDE_LAST, 2, 4>(args),
                            (WIDE_BLOCK, 2, 5) => wide_pass::<P, WIDE_BLOCK, 2, 5>(args),
                            (WIDE_BLOCK, 2, 6) => wide_pass::<P, WIDE_BLOCK, 2, 6>(args),
                            (WIDE_LAST, 2, 5) => wide_pass::<P, WIDE_LAST, 2, 5>(args),
                            (WIDE_LAST, 2, 6) => wide_pass::<P, WIDE_LAST, 2, 6>(args),
                            _ => unreachable!(
                                "no wide pass of {m} tokens, {vectors} vectors, {rows} rows"
                            ),
                        }
                    };
                    first += rows;
                }
            }
        }

        /// One pass of [`wide_group`]: rows `first .. first + R` (of either half) against vectors
        /// `v0 .. v0 + V` of the group's tokens, `R · V` accumulators.
        #[target_feature(enable = $features)]
        unsafe fn wide_pass<const P: usize, const M: usize, const V: usize, const R: usize>(
            (planes, blocks, acts, first, v0, sums): (
                &[__m256i],
                usize,
                &[i8],
                usize,
                usize,
                &mut [i32],
            ),
        ) {
            use $crate::kernels::avx2::Mac;
            type K = $mac;
            let m = M;
            debug_assert!(
                sums.len() == 16 * m
                    && planes.len() == blocks * 2 * P
                    && acts.len() == blocks * 4 * P * m
                    && first + R <= 16
                    && 8 * (v0 + V) <= m
                    && blocks * P <= K::RUN_PLANES
            );
            // Row `r`'s quad of plane `p` of block `kb` is lane `r % 8` of plane
            // `(2kb + r / 8) · P + p`: at `(2P · kb + p) · 8 + at[r]` among the planes' lanes.
            let at: [usize; R] = std::array::from_fn(|r| {
                let row = first + r;
                row / 8 * P * 8 + row % 8
            });
            let lanes = planes.as_ptr().cast::<i32>();
            let mut acc = [[_mm256_setzero_si256(); V]; R];
            for kb in 0..blocks {
                for p in 0..P {
                    let quad = kb * P + p;
                    // SAFETY: `quad < P · blocks`, so its `m` tokens' `4m` bytes are in `acts`,
                    // and `v0 + V <= m / 8`.
                    let a: [__m256i; V] = std::array::from_fn(|v| unsafe {
                        _mm256_loadu_si256(acts.as_ptr().add(quad * 4 * m + 32 * (v0 + v)).cast())
                    });
                    let base = (2 * P * kb + p) * 8;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: `kb < blocks`, `p < P`, and `at[r]` is a lane of one of block
                        // `kb`'s `2P` planes: within `planes`.
                        let u = _mm256_set1_epi32(unsafe { lanes.add(base + at[r]).read() });
                        for (acc, a) in acc.iter_mut().zip(a) {
                            // SAFETY: this function has the features `K` is compiled for.
                            unsafe { K::step::<1>(acc, &[u], &[a]) };
                            // SAFETY: the template is empty: the register is read and written
                            // back unchanged. It keeps LLVM from summing several planes'
                            // products before adding them, which needs more registers than
                            // there are (spills to the stack on every pass).
                            unsafe {
                                std::arch::asm!(
                                    "/* {0} */",
                                    inout(ymm_reg) * acc,
                                    options(pure, nomem, nostack, preserves_flags)
                                )
                            };
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (v, acc) in acc.iter().enumerate() {
                    let at = (first + r) * m + 8 * (v0 + v);
                    // SAFETY: row `first + r < 16`, tokens `8(v0 + v) ..` `+ 8 <= m`: in `sums`.
                    unsafe {
                        let dst = sums.as_mut_ptr().add(at).cast::<__m256i>();
                        _mm256_storeu_si256(
                            dst,
                            _mm256_add_epi32(_mm256_loadu_si256(dst), K::widen(*acc)),
                        );
                    }
                }
            }
        }

        /// [`token_block`] for a group of `m` tokens (1, 2, 4 or
        /// [`TOKEN_BLOCK`](crate::kernels::avx2::TOKEN_BLOCK)).
        #[target_feature(enable = $features)]
        unsafe fn group<const P: usize, U: $crate::kernels::avx2::Planes<P>>(
            m: usize,
            codes: &[u8],
            k_blocks: usize,
            acts: &[i8],
            sums: &[i32],
            out: &mut [i32],
        ) {
            use $crate::kernels::avx2::TOKEN_BLOCK;
            let args = (codes, k_blocks, acts, sums, out);
            // SAFETY: same features; the caller's bounds.
            unsafe {
                match m {
                    TOKEN_BLOCK => token_block::<TOKEN_BLOCK, P, U>(args),
                    4 => token_block::<4, P, U>(args),
                    2 => token_block::<2, P, U>(args),
                    _ => token_block::<1, P, U>(args),
                }
            }
        }

        /// A group of `M` tokens (activations `acts` grouped by block as
        /// [`QuantizedActs::with_grouped`] lays them out, code sums `sums`) against one tile.
        /// Several tokens: the halves one after the other, so that only one half's four planes,
        /// the `M` accumulators and a few temporaries are live. One token: both halves of each
        /// block together, reading the codes once, in order (5–12% faster than half by half in a
        /// one-thread micro-benchmark).
        #[target_feature(enable = $features)]
        unsafe fn token_block<
            const M: usize,
            const P: usize,
            U: $crate::kernels::avx2::Planes<P>,
        >(
            (codes, k_blocks, acts, sums, out): (&[u8], usize, &[i8], &[i32], &mut [i32]),
        ) {
            // SAFETY (all four): same features; the caller's bounds, and `first + H <= 2`.
            unsafe {
                if M == 1 && U::BITS2 {
                    lone_bits2(codes, k_blocks, acts, sums[0], out);
                } else if M == 1 {
                    halves::<M, 2, P, U>(codes, k_blocks, acts, sums, 0, out);
                } else {
                    halves::<M, 1, P, U>(codes, k_blocks, acts, sums, 0, out);
                    halves::<M, 1, P, U>(codes, k_blocks, acts, sums, 1, out);
                }
            }
        }

        /// One token against one tile of [`Bits2`](crate::kernels::avx2::Bits2) codes, both halves
        /// of each block together as [`token_block`] does. Planes 0 and 2 are masked after one
        /// shift as usual, planes 1 and 3 masked in place, as `4u`, into their own accumulator,
        /// divided by 4 at the end: five instructions to unpack a half instead of seven.
        ///
        /// Bound: an accumulator takes two planes per block, and a plane of `4u` adds 4 times as
        /// much to a lane as one of `u`, so [`Mac::RUN_PLANES`] / 8 blocks keep both within what
        /// the `Mac` proves for `RUN_PLANES` planes of `u`. Each pair sum of `4u` planes is a
        /// multiple of 4, so the shift is exact; the i32 totals gain at most 4 · 4 · 2 · 1024 per
        /// block, within i32 for any row shorter than 2¹⁸ blocks.
        #[target_feature(enable = $features)]
        unsafe fn lone_bits2(
            codes: &[u8],
            k_blocks: usize,
            acts: &[i8],
            sum: i32,
            out: &mut [i32],
        ) {
            use $crate::kernels::avx2::Mac;
            type K = $mac;
            debug_assert!(
                codes.len() >= k_blocks * 64 && out.len() >= 16 && acts.len() >= 16 * k_blocks
            );
            let run_blocks = (K::RUN_PLANES / 8).max(1);
            let (low, high) = (_mm256_set1_epi8(0x03), _mm256_set1_epi8(0x0c));
            let mut total = [[_mm256_setzero_si256(); 2]; 2];
            let mut run = 0;
            while run < k_blocks {
                let end = k_blocks.min(run.saturating_add(run_blocks));
                let mut acc = [[_mm256_setzero_si256(); 2]; 2];
                for kb in run..end {
                    $crate::kernels::prefetch(codes, kb * 64);
                    let a: [__m256i; 4] = std::array::from_fn(|p| {
                        // SAFETY: the token's 16 codes of block `kb < k_blocks` are in `acts`.
                        let quad = unsafe {
                            acts.as_ptr()
                                .add((kb * 4 + p) * 4)
                                .cast::<i32>()
                                .read_unaligned()
                        };
                        _mm256_set1_epi32(quad)
                    });
                    for (j, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: half `2kb + j < 2 · k_blocks`: its 32 bytes are in `codes`.
                        let v = unsafe {
                            _mm256_loadu_si256(codes.as_ptr().add((kb * 2 + j) * 32).cast())
                        };
                        let t = _mm256_srli_epi16::<4>(v);
                        let unit = [_mm256_and_si256(v, low), _mm256_and_si256(t, low)];
                        let fourfold = [_mm256_and_si256(v, high), _mm256_and_si256(t, high)];
                        // SAFETY: this function has the features `K` is compiled for.
                        unsafe {
                            K::step_alone(&mut acc[0], &unit, &[a[0], a[2]]);
                            K::step_alone(&mut acc[1], &fourfold, &[a[1], a[3]]);
                        }
                    }
                }
                for (total, acc) in total.iter_mut().zip(acc) {
                    for (total, acc) in total.iter_mut().zip(acc) {
                        // SAFETY: as above.
                        *total = _mm256_add_epi32(*total, unsafe { K::widen(acc) });
                    }
                }
                run = end;
            }
            for (j, [unit, fourfold]) in total.into_iter().enumerate() {
                let row = _mm256_add_epi32(unit, _mm256_srai_epi32::<2>(fourfold));
                // SAFETY: `out` holds 16 accumulators.
                unsafe {
                    _mm256_storeu_si256(
                        out.as_mut_ptr().add(8 * j).cast(),
                        _mm256_sub_epi32(row, _mm256_set1_epi32(sum)),
                    )
                };
            }
        }

        /// Halves `first .. first + H` of a group of `M` tokens against one tile: each half is
        /// unpacked once per block and used by all `M` tokens, accumulating runs of
        /// [`Mac::RUN_PLANES`] planes before widening.
        #[target_feature(enable = $features)]
        unsafe fn halves<
            const M: usize,
            const H: usize,
            const P: usize,
            U: $crate::kernels::avx2::Planes<P>,
        >(
            codes: &[u8],
            k_blocks: usize,
            acts: &[i8],
            sums: &[i32],
            first: usize,
            out: &mut [i32],
        ) {
            use $crate::kernels::avx2::Mac;
            type K = $mac;
            let run_blocks = (K::RUN_PLANES / P).max(1);
            debug_assert!(
                codes.len() >= k_blocks * 64
                    && out.len() >= M * 16
                    && acts.len() >= M * 4 * P * k_blocks
                    && sums.len() == M
                    && first + H <= 2
            );
            let mut total = [[_mm256_setzero_si256(); H]; M];
            let mut run = 0;
            while run < k_blocks {
                let end = k_blocks.min(run.saturating_add(run_blocks));
                let mut acc = [[_mm256_setzero_si256(); H]; M];
                for kb in run..end {
                    $crate::kernels::prefetch(codes, kb * 64 + 32 * first);
                    for j in 0..H {
                        let half = kb * 2 + first + j;
                        // SAFETY: `half < 2 · k_blocks`, so its 32 bytes are in `codes`; this
                        // function has the features `U` is compiled for.
                        let c: [__m256i; P] = unsafe {
                            U::planes(_mm256_loadu_si256(codes.as_ptr().add(half * 32).cast()))
                        };
                        for (m, acc) in acc.iter_mut().enumerate() {
                            let a: [__m256i; P] = std::array::from_fn(|p| {
                                // SAFETY: the group holds `M · 4P · k_blocks` codes; this reads
                                // quad `p < P` of token `m < M` in block `kb < k_blocks`.
                                let quad = unsafe {
                                    acts.as_ptr()
                                        .add(((kb * M + m) * P + p) * 4)
                                        .cast::<i32>()
                                        .read_unaligned()
                                };
                                _mm256_set1_epi32(quad)
                            });
                            // SAFETY: this function has the features `K` is compiled for.
                            unsafe {
                                if M < $crate::kernels::avx2::TOKEN_BLOCK {
                                    K::step_alone(&mut acc[j], &c, &a)
                                } else {
                                    K::step(&mut acc[j], &c, &a)
                                }
                            };
                        }
                    }
                }
                for (total, acc) in total.iter_mut().zip(acc) {
                    for j in 0..H {
                        // SAFETY: as above.
                        total[j] = _mm256_add_epi32(total[j], unsafe { K::widen(acc[j]) });
                    }
                }
                run = end;
            }
            for (m, total) in total.iter().enumerate() {
                let sum = _mm256_set1_epi32(sums[m]);
                for j in 0..H {
                    // SAFETY: `out` holds `M · 16` accumulators; `first + j < 2`.
                    unsafe {
                        _mm256_storeu_si256(
                            out.as_mut_ptr().add(16 * m + 8 * (first + j)).cast(),
                            _mm256_sub_epi32(total[j], sum),
                        )
                    };
                }
            }
        }
    };
}
pub(super) use ternary_kernel;

ternary_kernel!("avx2", Maddubs);

/// `out[j · out_stride + k] = rows[k · row_stride + j] − sums[j]` for `j, k < 8`: eight rows of
/// eight tokens' sums, turned into eight tokens' runs of eight rows, less each token's `Σ q`.
///
/// # Safety
/// The CPU must support AVX2; `rows` holds `7 · row_stride + 8` values and `out`
/// `7 · out_stride + 8`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_transposed(
    rows: &[i32],
    row_stride: usize,
    sums: &[i32],
    out: &mut [i32],
    out_stride: usize,
) {
    debug_assert!(
        rows.len() > 7 * row_stride + 7 && out.len() > 7 * out_stride + 7 && sums.len() == 8
    );
    // SAFETY: the bounds above.
    let (v, sums) = unsafe {
        (
            std::array::from_fn::<_, 8, _>(|k| {
                _mm256_loadu_si256(rows.as_ptr().add(k * row_stride).cast())
            }),
            _mm256_loadu_si256(sums.as_ptr().cast()),
        )
    };
    let v = v.map(|row| _mm256_sub_epi32(row, sums));
    // Pairs of 32-bit lanes, then of 64-bit lanes, then of 128-bit halves.
    let a = [0, 2, 4, 6].map(|k| _mm256_unpacklo_epi32(v[k], v[k + 1]));
    let b = [0, 2, 4, 6].map(|k| _mm256_unpackhi_epi32(v[k], v[k + 1]));
    let c = [
        _mm256_unpacklo_epi64(a[0], a[1]),
        _mm256_unpackhi_epi64(a[0], a[1]),
        _mm256_unpacklo_epi64(b[0], b[1]),
        _mm256_unpackhi_epi64(b[0], b[1]),
    ];
    let d = [
        _mm256_unpacklo_epi64(a[2], a[3]),
        _mm256_unpackhi_epi64(a[2], a[3]),
        _mm256_unpacklo_epi64(b[2], b[3]),
        _mm256_unpackhi_epi64(b[2], b[3]),
    ];
    for j in 0..4 {
        // SAFETY: the bounds above.
        unsafe {
            _mm256_storeu_si256(
                out.as_mut_ptr().add(j * out_stride).cast(),
                _mm256_permute2x128_si256::<0x20>(c[j], d[j]),
            );
            _mm256_storeu_si256(
                out.as_mut_ptr().add((j + 4) * out_stride).cast(),
                _mm256_permute2x128_si256::<0x31>(c[j], d[j]),
            );
        }
    }
}

/// `Σ a[i] · b[i]` in f32 with 8-lane FMAs.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= n.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(i + 8 * j)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe {
            (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let t = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let quad = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let mut sum = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)));
    for k in i..n {
        sum += a[k] * b[k];
    }
    sum
}

/// Widen f16 values to f32.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 halves at 2i and 8 floats at i are in bounds.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for k in i..n {
        dst[k] = half::f16::from_le_bytes([src[2 * k], src[2 * k + 1]]).to_f32();
    }
}

/// Widen bf16 values to f32 (exact).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn bf16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 bf16 values at 2i and 8 floats at i are in bounds.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
            let wide = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(wide));
        }
        i += 8;
    }
    for k in i..n {
        dst[k] = half::bf16::from_le_bytes([src[2 * k], src[2 * k + 1]]).to_f32();
    }
}

/// See [`super::activation::quantize_row`].
///
/// # Safety
/// The CPU must support AVX2; `out.len() == x.len()`.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_row(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let n = x.len();
    let sign_off = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut vmax = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
        vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, sign_off));
        i += 8;
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
    let mut absmax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    for v in &x[i..] {
        absmax = absmax.max(v.abs());
    }
    let s = 127.0 / absmax.max(1e-5);
    let vs = _mm256_set1_ps(s);
    let mut vsum = _mm256_setzero_si256();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n for both x and out.
        unsafe {
            let q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), vs));
            vsum = _mm256_add_epi32(
                vsum,
                _mm256_max_epi32(
                    _mm256_min_epi32(q, _mm256_set1_epi32(127)),
                    _mm256_set1_epi32(-128),
                ),
            );
            let w16 = _mm256_packs_epi32(q, q);
            let w8 = _mm256_packs_epi16(w16, w16);
            let lo = _mm256_castsi256_si128(w8);
            let hi = _mm256_extracti128_si256::<1>(w8);
            let bytes = _mm_unpacklo_epi32(lo, hi);
            out.as_mut_ptr()
                .add(i)
                .cast::<i64>()
                .write_unaligned(_mm_cvtsi128_si64(bytes));
        }
        i += 8;
    }
    let mut sums = [0i32; 8];
    // SAFETY: `sums` holds 8 i32.
    unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), vsum) };
    let mut sum: i32 = sums.iter().sum();
    for k in i..n {
        let q = (x[k] * s).round_ties_even().clamp(-128.0, 127.0) as i8;
        out[k] = q;
        sum += q as i32;
    }
    (s, sum)
}

/// `dst[i] = src[i] as i8 · scale` (exact: the same single rounding as the scalar code).
///
/// # Safety
/// The CPU must support AVX2; `dst.len() == src.len()`.
#[target_feature(enable = "avx2")]
pub unsafe fn i8_to_f32(src: &[u8], scale: f32, dst: &mut [f32]) {
    let n = dst.len();
    let s = _mm256_set1_ps(scale);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 bytes at i and 8 floats at i are in bounds.
        unsafe {
            let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(src.as_ptr().add(i).cast()));
            _mm256_storeu_ps(
                dst.as_mut_ptr().add(i),
                _mm256_mul_ps(_mm256_cvtepi32_ps(q), s),
            );
        }
        i += 8;
    }
    for k in i..n {
        dst[k] = src[k] as i8 as f32 * scale;
    }
}

/// [`super::ternary::scale_tile`] for a tile of 16 rows: two vectors per token, converted, divided
/// and multiplied as the scalar expression is (each step one correctly rounded operation).
///
/// # Safety
/// The CPU must support AVX2; `sums` holds `act_scales.len() · tile_rows` values, `tile_rows >=
/// 16`, and `out` is as `scale_tile` requires for 16 rows.
#[target_feature(enable = "avx2")]
pub unsafe fn scale_tile16(
    sums: &[i32],
    tile_rows: usize,
    act_scales: &[f32],
    w_scale: f32,
    out: *mut f32,
    stride: usize,
) {
    let w = _mm256_set1_ps(w_scale);
    for (t, &s) in act_scales.iter().enumerate() {
        let s = _mm256_set1_ps(s);
        for half in 0..2 {
            // SAFETY: 8 sums of token `t` at `8 · half` are within its `tile_rows >= 16`; the
            // caller's guarantee covers the 16 floats at `out + t · stride`.
            unsafe {
                let a = _mm256_loadu_si256(sums.as_ptr().add(t * tile_rows + 8 * half).cast());
                let y = _mm256_mul_ps(_mm256_div_ps(_mm256_cvtepi32_ps(a), s), w);
                _mm256_storeu_ps(out.add(t * stride + 8 * half), y);
            }
        }
    }
}

/// What a pass of the dense row kernel asks for ahead of the rows it reads.
#[derive(Clone, Copy)]
pub(super) enum Ahead {
    Nothing,
    /// The line this many bytes past each row's chunk (the next group of rows).
    Rows(usize),
    /// Each row as a stream of weights ([`super::prefetch`]).
    Stream,
}

/// Defines `dense_rows_dot` (and its helpers `dense_rows_of` and `dense_row_group`) for one vector
/// width: `$vec` of `$lanes` f32 lanes, `$max_rows` rows at a time for several tokens,
/// `$i8_lone_chunks` chunks in flight for one token's `i8_row` rows, `$widen` a closure `(pointer,
/// kind) -> $vec` widening `$lanes` elements of a row in registers, `$hsum` the horizontal sum.
macro_rules! dense_rows_kernel {
    ($features:literal, $vec:ty, $lanes:literal, $max_rows:literal, $i8_lone_chunks:literal,
     $zero:ident, $load:ident, $fma:ident, $add:ident, $hsum:path, $widen:expr) => {
        /// `out[(r - rows.start) · tokens + t] = row(r) · x[t]` for a dense matrix of `kind` (0
        /// f16, 1 bf16, 2 i8 codes: the caller multiplies by the row scale) and the `tokens =
        /// x.len() / cols` token rows of `x`. For one token, one row at a time: a single sequential
        /// stream per thread, asked for ahead as the weights are ([`super::prefetch`]; interleaving
        /// four rows to share activation loads decoded a third slower, BENCHMARKS.md); for more,
        /// `$max_rows` rows at a time (as many as the registers hold accumulators for; with two
        /// tokens 34–46% faster than one row at a time). Each chunk of a row is widened once per
        /// group of up to four tokens, so the row comes from memory once (asked for while the rows
        /// before it are multiplied) and from L1 for further groups.
        ///
        /// # Safety
        /// The CPU must support the features above; `data` holds `rows.end` rows of `cols`
        /// elements of `kind` (`elem_bytes` each), `x.len()` is a multiple of `cols`, and
        /// `out.len() == rows.len() · tokens`.
        #[target_feature(enable = $features)]
        pub unsafe fn dense_rows_dot(
            data: &[u8],
            elem_bytes: usize,
            kind: u8,
            rows: Range<usize>,
            cols: usize,
            x: &[f32],
            out: &mut [f32],
        ) {
            let tokens = x.len() / cols;
            let row_bytes = cols * elem_bytes;
            assert!(data.len() >= rows.end * row_bytes && out.len() == rows.len() * tokens);
            if tokens == 0 {
                return;
            }
            if tokens > 1 {
                let args = (data, row_bytes, elem_bytes, rows, cols, x, out);
                // SAFETY: the features and sizes of this function.
                unsafe {
                    match kind {
                        0 => dense_rows_of::<0>(args),
                        1 => dense_rows_of::<1>(args),
                        _ => dense_rows_of::<2>(args),
                    }
                }
                return;
            }
            // One token streams one row at a time: memory-bound, and one stream per thread is what
            // the prefetchers follow best; the rows are consecutive, so asking ahead runs into the
            // next row. (Its `i8_row` rows take `$i8_lone_chunks` chunks in flight, as measured
            // fastest on each width: with four, the AVX-512 loop LLVM makes for them read at half
            // the speed.)
            for (i, r) in rows.enumerate() {
                let row = [&data[r * row_bytes..(r + 1) * row_bytes]];
                let (g, o) = (
                    (elem_bytes, x, cols, 1, $crate::kernels::avx2::Ahead::Stream),
                    &mut out[i..],
                );
                // SAFETY: the features of this function; the row holds `cols` elements, `x` the
                // token's row and `o` its output in this row and the ones after.
                unsafe {
                    match kind {
                        0 => dense_row_group::<1, 1, 4, 0>(row, g, o),
                        1 => dense_row_group::<1, 1, 4, 1>(row, g, o),
                        _ => dense_row_group::<1, 1, $i8_lone_chunks, 2>(row, g, o),
                    }
                };
            }
        }

        /// [`dense_rows_dot`] for two or more tokens and rows of kind `KIND`: compute-bound, so
        /// three (AVX2) or six (AVX-512) rows at a time (`$max_rows`, as many as the registers hold
        /// accumulators for), fewer at the end, divide the activation loads per multiply-add by as
        /// many (with 8 tokens, three rows against two 12–27% faster, six against four 5–13%). One
        /// copy per kind: with the kind a constant the accumulators stay in registers (with a
        /// run-time kind, four rows' went through the stack).
        ///
        /// # Safety
        /// As [`dense_rows_dot`], with `row_bytes = cols · elem_bytes`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dense_rows_of<const KIND: u8>(
            (data, row_bytes, elem_bytes, rows, cols, x, out): (
                &[u8],
                usize,
                usize,
                Range<usize>,
                usize,
                &[f32],
                &mut [f32],
            ),
        ) {
            let tokens = x.len() / cols;
            let mut r = rows.start;
            while r < rows.end {
                let together = match rows.end - r {
                    left if $max_rows >= 6 && left >= 6 => 6,
                    left if $max_rows >= 4 && left >= 4 => 4,
                    left if $max_rows >= 3 && left >= 3 => 3,
                    left if left >= 2 => 2,
                    _ => 1,
                };
                let out = &mut out[(r - rows.start) * tokens..];
                let mut t = 0;
                while t < tokens {
                    let (xs, o) = (&x[t * cols..], &mut out[t..]);
                    // The first pass over these rows asks for the next group's, which follow
                    // them in `data`: the hardware prefetcher alone left this loop waiting on
                    // memory (8 tokens, one thread: 25–30% faster with it). Later passes find
                    // these rows in cache.
                    let ahead = if t == 0 {
                        $crate::kernels::avx2::Ahead::Rows(together * row_bytes)
                    } else {
                        $crate::kernels::avx2::Ahead::Nothing
                    };
                    let g = (elem_bytes, xs, cols, tokens, ahead);
                    let at = (data, row_bytes, r, tokens - t);
                    // SAFETY (all): the features of this function; each row holds `cols` elements,
                    // `xs` the rows of tokens `t..tokens`, at least as many as each group takes,
                    // and `o` the outputs of those tokens in this row and the ones after.
                    t += unsafe {
                        match together {
                            6 => dense_token_group::<6, KIND>(at, g, o),
                            4 => dense_token_group::<4, KIND>(at, g, o),
                            3 => dense_token_group::<3, KIND>(at, g, o),
                            2 => dense_token_group::<2, KIND>(at, g, o),
                            _ => dense_token_group::<1, KIND>(at, g, o),
                        }
                    };
                }
                r += together;
            }
        }

        /// [`dense_row_group`] of the `R` rows from row `r` of `data` against the next group of up
        /// to four of `left` tokens; returns the tokens taken. `U` depends on the group's size
        /// only, never on `R`, so that a row's sums are the same wherever a thread's range of rows
        /// starts.
        ///
        /// # Safety
        /// As [`dense_row_group`] for the group this takes.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dense_token_group<const R: usize, const KIND: u8>(
            (data, row_bytes, r, left): (&[u8], usize, usize, usize),
            g: (usize, &[f32], usize, usize, $crate::kernels::avx2::Ahead),
            out: &mut [f32],
        ) -> usize {
            let rows: [&[u8]; R] =
                std::array::from_fn(|i| &data[(r + i) * row_bytes..(r + i + 1) * row_bytes]);
            // SAFETY: the caller's.
            unsafe {
                match left {
                    1 => dense_row_group::<R, 1, 2, KIND>(rows, g, out),
                    2 => dense_row_group::<R, 2, 2, KIND>(rows, g, out),
                    3 => dense_row_group::<R, 3, 1, KIND>(rows, g, out),
                    _ => dense_row_group::<R, 4, 1, KIND>(rows, g, out),
                }
            }
        }

        /// The dot products of `R` rows of kind `KIND` with `M` tokens: each widened chunk of a
        /// row feeds `M` accumulators and each loaded chunk of a token `R`, with `U` chunks in
        /// flight (independent FMA chains hide the latency). `g` is (element bytes, the tokens'
        /// rows, columns, the stride of `out` between rows, and how far past each row's chunks to
        /// ask for memory, 0 for not at all); writes `out[i · stride + m]` for row `i` and token
        /// `m`, and returns `M`.
        ///
        /// # Safety
        /// The features of [`dense_rows_dot`]; each row holds `cols` elements of `elem_bytes`, `xs`
        /// at least `M · cols` values and `out` at least `(R − 1) · stride + M`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dense_row_group<
            const R: usize,
            const M: usize,
            const U: usize,
            const KIND: u8,
        >(
            rows: [&[u8]; R],
            (elem_bytes, xs, cols, stride, ahead): (
                usize,
                &[f32],
                usize,
                usize,
                $crate::kernels::avx2::Ahead,
            ),
            out: &mut [f32],
        ) -> usize {
            debug_assert!(xs.len() >= M * cols && out.len() >= (R - 1) * stride + M);
            let widen = $widen;
            let xp = xs.as_ptr();
            let full = cols / $lanes * $lanes;
            let mut acc: [[[$vec; M]; R]; U] = [[[$zero(); M]; R]; U];
            let mut i = 0;
            // SAFETY (the closure's loads): `k + $lanes <= cols`, so element `k` of each row and of
            // each token's row exist.
            let step = |acc: &mut [[$vec; M]; R], k: usize| {
                for row in rows {
                    match ahead {
                        $crate::kernels::avx2::Ahead::Nothing => {}
                        $crate::kernels::avx2::Ahead::Rows(bytes) => {
                            $crate::kernels::prefetch_line(row, k * elem_bytes + bytes)
                        }
                        $crate::kernels::avx2::Ahead::Stream => {
                            $crate::kernels::prefetch(row, k * elem_bytes)
                        }
                    }
                }
                // The rows' chunks widened first, then one token at a time: `R + 1` registers
                // beside the accumulators (six rows of four tokens fill AVX-512's 32; with the
                // tokens loaded first they spilled and ran at half the speed).
                let mut w = [$zero(); R];
                for (w, row) in w.iter_mut().zip(rows) {
                    *w = unsafe { widen(row.as_ptr().add(k * elem_bytes), KIND) };
                }
                for m in 0..M {
                    let a = unsafe { $load(xp.add(m * cols + k)) };
                    for (acc, w) in acc.iter_mut().zip(w) {
                        acc[m] = $fma(w, a, acc[m]);
                    }
                }
            };
            while i + U * $lanes <= full {
                for (u, acc) in acc.iter_mut().enumerate() {
                    step(acc, i + u * $lanes);
                }
                i += U * $lanes;
            }
            while i < full {
                step(&mut acc[0], i);
                i += $lanes;
            }
            for (j, row) in rows.iter().enumerate() {
                debug_assert!(row.len() == cols * elem_bytes);
                for m in 0..M {
                    let x = &xs[m * cols..(m + 1) * cols];
                    let tail: f32 = (full..cols)
                        .map(|k| $crate::kernels::float::dense_element(KIND, row, k) * x[k])
                        .sum();
                    let sum = acc[1..].iter().fold(acc[0][j][m], |s, a| $add(s, a[j][m]));
                    out[j * stride + m] = $hsum(sum) + tail;
                }
            }
            M
        }
    };
}
pub(super) use dense_rows_kernel;

dense_rows_kernel!(
    "avx2,fma,f16c",
    __m256,
    8,
    3,
    4,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    hsum,
    // SAFETY: the caller passes a pointer with 8 elements readable.
    |p: *const u8, kind: u8| -> __m256 {
        unsafe {
            match kind {
                0 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                1 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                    _mm_loadu_si128(p.cast()),
                ))),
                _ => _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))),
            }
        }
    }
);

/// Defines `q4_rows` (see [`super::q4::matmul`]) for one vector width: one row at a time (one
/// sequential stream of codes and one of scales, asked for ahead whatever the tokens: with the
/// hardware prefetcher alone, one token's output matrix read at about 70% of the machine's
/// bandwidth on the Xeon VM of BENCHMARKS.md; rows walked as [`super::q4::for_row_blocks`] does),
/// each superblock of `$blocks` blocks (activations in [`super::q4::Q4Layout::Superblocks`] order)
/// unpacked once for a register block of up to `$tokens` tokens (then the `$fewer` sizes, then
/// one). `$vi` holds one 32-bit lane per block of a superblock; the intrinsics named after it are
/// that width's; `$scales` turns a superblock's f16 weight scales (a pointer) into lane order;
/// `$dot` gives a token's lanes their block's exact `Σ (n - 8) · q` from its lane corrections, the
/// weights' low and high nibbles and its eight activation vectors; `$hsum` sums the lanes of `$vf`.
/// Lanes are scaled once by their block's weight and activation scales in f32.
macro_rules! q4_kernel {
    ($features:literal, $vi:ty, $vf:ty, $blocks:literal, $tokens:literal, [$($fewer:literal),*],
     $load:ident, $load_ps:ident, $set1_epi8:ident, $zero_ps:ident, $unpacklo32:ident,
     $unpackhi32:ident, $unpacklo64:ident, $unpackhi64:ident, $and:ident, $srli16:ident,
     $cvt:ident, $mul:ident, $fma:ident, $scales:expr, $dot:expr, $hsum:expr) => {
        /// See [`super::q4::matmul`] and the kernel's description where it is defined.
        ///
        /// # Safety
        /// The CPU must support the features above; `data` holds a whole `q4_b32` tensor of
        /// geometry `g`, `rows.end <= g.rows`, `acts.cols == g.cols`, `acts.layout` is this path's
        /// and `out.len() == rows.len() · acts.tokens`.
        #[target_feature(enable = $features)]
        pub unsafe fn q4_rows(
            g: bitnet_format::q4::Q4Geometry,
            data: &[u8],
            acts: &super::q4::Q4Acts,
            rows: Range<usize>,
            out: &mut [f32],
        ) {
            debug_assert!(data.len() >= g.byte_len() && out.len() == rows.len() * acts.tokens);
            debug_assert_eq!(acts.layout.superblock_blocks(), $blocks);
            super::q4::for_row_blocks(g, data, acts, rows, out, $tokens, |m, args| {
                // SAFETY: same features; the caller's bounds, and the block's tokens exist.
                unsafe {
                    match m {
                        $tokens => q4_pass::<$tokens>(args),
                        $($fewer => q4_pass::<$fewer>(args),)*
                        _ => q4_pass::<1>(args),
                    }
                }
            });
        }

        /// Each row of a pass against tokens `t0 .. t0 + M`. Each token's lanes see the same
        /// operations in the same order whatever `M` is, so a token's product does not depend on
        /// the tokens beside it.
        #[target_feature(enable = $features)]
        unsafe fn q4_pass<const M: usize>((g, data, acts, rows, t0, out): super::q4::RowBlock) {
            use super::q4::{BLOCK, SuperblockPad, prefetch_superblock, superblock};
            // Bytes per vector: a 32-bit lane per block.
            const V: usize = 4 * $blocks;
            let nibble = $set1_epi8(0x0f);
            let qa: [*const i8; M] = std::array::from_fn(|m| acts.grouped(t0 + m).as_ptr());
            let lanes: [_; M] = std::array::from_fn(|m| acts.lanes(t0 + m));
            let corr: [*const i32; M] = std::array::from_fn(|m| lanes[m].0.as_ptr());
            let da: [*const f32; M] = std::array::from_fn(|m| lanes[m].1.as_ptr());
            let mut pad = SuperblockPad::default();
            let tokens = acts.tokens;
            for (i, r) in rows.enumerate() {
                let mut acc: [$vf; M] = [$zero_ps(); M];
                for sb in 0..g.blocks().div_ceil($blocks) {
                    prefetch_superblock(g, data, r, sb, $blocks);
                    let (codes, scales) = superblock(g, data, r, sb, $blocks, &mut pad);
                    // SAFETY: `superblock` returns `16 · $blocks` code bytes and `$blocks` f16
                    // scales.
                    let l: [$vi; 4] =
                        [0, 1, 2, 3].map(|q| unsafe { $load(codes.as_ptr().add(V * q).cast()) });
                    // Chunk `c` of `l[q]` is block `C · q + c` (`C` chunks of 128 bits per
                    // vector); these leave word `k` of block `C · i + c` in lane `4c + i` of
                    // `w[k]`.
                    let (t0, t1) = ($unpacklo32(l[0], l[1]), $unpackhi32(l[0], l[1]));
                    let (t2, t3) = ($unpacklo32(l[2], l[3]), $unpackhi32(l[2], l[3]));
                    let w = [
                        $unpacklo64(t0, t2),
                        $unpackhi64(t0, t2),
                        $unpacklo64(t1, t3),
                        $unpackhi64(t1, t3),
                    ];
                    let lo = w.map(|v| $and(v, nibble));
                    let hi = w.map(|v| $and($srli16::<4>(v), nibble));
                    let dw: $vf = $scales(scales.as_ptr());
                    for m in 0..M {
                        let at = sb * $blocks;
                        // SAFETY: token `t0 + m`'s grouped codes hold whole superblocks: eight
                        // vectors from `at · 32`, and `$blocks` lane corrections and scales from
                        // `at`.
                        let (a, c, ds) = unsafe {
                            let a = qa[m].add(at * BLOCK);
                            (
                                [0, 1, 2, 3, 4, 5, 6, 7].map(|v| $load(a.add(V * v).cast())),
                                $load(corr[m].add(at).cast()),
                                $load_ps(da[m].add(at)),
                            )
                        };
                        let dot: $vi = $dot(c, &lo, &hi, &a);
                        acc[m] = $fma($cvt(dot), $mul(dw, ds), acc[m]);
                    }
                }
                for (m, acc) in acc.into_iter().enumerate() {
                    out[i * tokens + t0 + m] = $hsum(acc);
                }
            }
        }
    };
}
pub(super) use q4_kernel;

// `vpmaddubsw` multiplies the unsigned nibbles by the signed activation codes and the eight
// results add up in i16, `vpmaddwd` widens, and the lane corrections make lane `p` hold block
// `2 (p mod 4) + p / 4`'s exact `Σ (n - 8) · q`. The i16 sums stay exact: `|q| <= 127`
// ([`super::q4::Q4Acts::quantize`]) and `n <= 15`, so each `vpmaddubsw` lane is within ±3810 (no
// saturation) and eight within ±30480. Four tokens per register block: the unpacked weights take
// eight of the sixteen ymm registers.
q4_kernel!(
    "avx2,fma,f16c",
    __m256i,
    __m256,
    8,
    4,
    [2],
    _mm256_loadu_si256,
    _mm256_loadu_ps,
    _mm256_set1_epi8,
    _mm256_setzero_ps,
    _mm256_unpacklo_epi32,
    _mm256_unpackhi_epi32,
    _mm256_unpacklo_epi64,
    _mm256_unpackhi_epi64,
    _mm256_and_si256,
    _mm256_srli_epi16,
    _mm256_cvtepi32_ps,
    _mm256_mul_ps,
    _mm256_fmadd_ps,
    // SAFETY: the caller passes 8 f16 scales; lane `p` takes block `2 (p mod 4) + p / 4`'s.
    |s: *const u8| unsafe {
        let order = _mm256_set_epi32(7, 5, 3, 1, 6, 4, 2, 0);
        _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128(s.cast())), order)
    },
    |c: __m256i, lo: &[__m256i; 4], hi: &[__m256i; 4], a: &[__m256i; 8]| {
        // Two chains, low and high halves.
        let (mut low, mut high) = (
            _mm256_maddubs_epi16(lo[0], a[0]),
            _mm256_maddubs_epi16(hi[0], a[1]),
        );
        for k in 1..4 {
            low = _mm256_add_epi16(low, _mm256_maddubs_epi16(lo[k], a[2 * k]));
            high = _mm256_add_epi16(high, _mm256_maddubs_epi16(hi[k], a[2 * k + 1]));
        }
        let pairs = _mm256_add_epi16(low, high);
        _mm256_add_epi32(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)), c)
    },
    hsum
);

/// Tokens per register block of [`q4_tiles`]: eight unpacked code vectors, the scales, four f32
/// sums and three temporaries take the 16 ymm registers.
const Q4_TILE_TOKENS: usize = 4;

/// See [`super::q4::matmul_tiles`]: each 16-row tile as two halves of 8 rows, each block's codes
/// unpacked once into eight vectors (8 rows × 4 columns each) for a register block of up to four
/// tokens, which `vpmaddubsw` multiplies by each token's broadcast activation quads (the eight
/// products add up in i16 within ±30480, as in [`q4_rows`]). Lane sums and their f32 scaling as
/// in the row kernel, lane by lane ([`super::q4::Q4Tiles::order`]).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `acts` must be quantized for this path with
/// `acts.cols == tiles.geometry.cols`, `rows.end <= tiles.geometry.rows` and
/// `out.len() == rows.len() · acts.tokens`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_tiles(
    tiles: &super::q4::Q4Tiles,
    acts: &super::q4::Q4Acts,
    rows: Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(out.len() == rows.len() * acts.tokens && rows.end <= tiles.geometry.rows);
    super::q4::for_tiles(acts, rows, out, Q4_TILE_TOKENS, |m, tile, t0, sums| {
        for half in 0..2 {
            // SAFETY: same features; the tokens exist and `sums` holds `16 · m` values.
            unsafe {
                match m {
                    Q4_TILE_TOKENS => {
                        q4_tile_half::<Q4_TILE_TOKENS>(tiles, tile, half, acts, t0, sums)
                    }
                    2 => q4_tile_half::<2>(tiles, tile, half, acts, t0, sums),
                    _ => q4_tile_half::<1>(tiles, tile, half, acts, t0, sums),
                }
            }
        }
    });
}

/// Rows `8 · half ..` of a tile against tokens `t0 .. t0 + M`: `sums[16 m + 8 · half + r]` is
/// row `8 · half + r`'s product with token `t0 + m`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_tile_half<const M: usize>(
    tiles: &super::q4::Q4Tiles,
    tile: usize,
    half: usize,
    acts: &super::q4::Q4Acts,
    t0: usize,
    sums: &mut [f32],
) {
    use super::q4::BLOCK;
    let nibble = _mm256_set1_epi8(0x0f);
    let q: [*const i8; M] = std::array::from_fn(|m| acts.row(t0 + m).as_ptr());
    let lanes: [_; M] = std::array::from_fn(|m| acts.lanes(t0 + m));
    // Per token, one f32 sum per lane of the row kernel's superblocks, of which `acc` is the
    // current lane's.
    let mut parts = [[_mm256_setzero_ps(); 8]; M];
    let mut acc = [_mm256_setzero_ps(); M];
    let mut lane = 0;
    for (e, &[p, l, b]) in tiles.order().iter().enumerate() {
        if p != lane {
            for m in 0..M {
                parts[m][lane] = acc[m];
                acc[m] = _mm256_setzero_ps();
            }
            lane = p;
        }
        if half == 0 {
            tiles.prefetch(tile, e);
        }
        let (codes, scales) = tiles.entry(tile, e);
        // SAFETY: an entry holds four 64-byte code vectors (this half's 32 bytes of each) and 16
        // f16 scales (this half's 8).
        let (v, dw) = unsafe {
            (
                [0, 1, 2, 3]
                    .map(|i| _mm256_loadu_si256(codes.as_ptr().add(64 * i + 32 * half).cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(scales.as_ptr().add(16 * half).cast())),
            )
        };
        // The low nibbles' four vectors for every token, then the high nibbles' in the same
        // registers: four code vectors, not eight, stay live beside the tokens' sums.
        let mut pairs = [_mm256_setzero_si256(); M];
        for (high, first) in [(false, 0), (true, 4)] {
            let c = v.map(|v| {
                _mm256_and_si256(if high { _mm256_srli_epi16::<4>(v) } else { v }, nibble)
            });
            for m in 0..M {
                // SAFETY: token `t0 + m` has `cols` codes, 32 of them in block `b`.
                let a = unsafe { q[m].add(b * BLOCK).cast::<i32>() };
                // SAFETY: quad `i < 8` of the block's 32 codes.
                let quad = |i: usize| _mm256_set1_epi32(unsafe { a.add(i).read_unaligned() });
                for (i, &c) in c.iter().enumerate() {
                    let product = _mm256_maddubs_epi16(c, quad(first + i));
                    pairs[m] = _mm256_add_epi16(pairs[m], product);
                }
            }
        }
        for m in 0..M {
            // SAFETY: lane `l` of token `t0 + m` has a correction and a scale.
            let (corr, da) =
                unsafe { (*lanes[m].0.get_unchecked(l), *lanes[m].1.get_unchecked(l)) };
            let dot = _mm256_add_epi32(
                _mm256_madd_epi16(pairs[m], _mm256_set1_epi16(1)),
                _mm256_set1_epi32(corr),
            );
            acc[m] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(dot),
                _mm256_mul_ps(dw, _mm256_set1_ps(da)),
                acc[m],
            );
        }
    }
    for m in 0..M {
        parts[m][lane] = acc[m];
        // `hsum`'s association, on 8 rows at once.
        let quad: [__m256; 4] =
            std::array::from_fn(|i| _mm256_add_ps(parts[m][i], parts[m][i + 4]));
        let total = _mm256_add_ps(
            _mm256_add_ps(quad[0], quad[2]),
            _mm256_add_ps(quad[1], quad[3]),
        );
        // SAFETY: `sums` holds `16 · M` values.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr().add(16 * m + 8 * half), total) };
    }
}

/// `e^x` of 8 values as [`super::attention::exp`] computes each, bit for bit.
#[inline]
#[target_feature(enable = "avx2")]
fn exp8(x: __m256) -> __m256 {
    use super::attention::{EXP_MIN, EXP_P, EXP_ROUND, LN2_HI, LN2_LO, LOG2_E};
    let round = _mm256_set1_ps(EXP_ROUND);
    let n = _mm256_sub_ps(
        _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2_E)), round),
        round,
    );
    let r = _mm256_sub_ps(
        _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI))),
        _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
    );
    let poly = EXP_P[1..].iter().fold(_mm256_set1_ps(EXP_P[0]), |acc, &c| {
        _mm256_add_ps(_mm256_mul_ps(acc, r), _mm256_set1_ps(c))
    });
    let e = _mm256_add_ps(
        _mm256_add_ps(_mm256_mul_ps(poly, _mm256_mul_ps(r, r)), r),
        _mm256_set1_ps(1.0),
    );
    let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    // Below EXP_MIN (and NaN) the mask is 0, as the reference returns.
    let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_MIN));
    _mm256_and_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(two_n)), keep)
}

/// One row of [`super::attention::softmax_rows`], bit for bit as its reference: the exponentials
/// 16 at a time into the reference's 16 lane sums (lanes 0–7 and 8–15 in two registers), the
/// tail's one by one.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn softmax(x: &mut [f32]) {
    use super::attention::{exp, fold_lanes};
    let n = x.len();
    let body = n - n % 16;
    let p = x.as_mut_ptr();
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in (0..body).step_by(8) {
        // SAFETY: c + 8 <= body <= n.
        m = _mm256_max_ps(m, unsafe { _mm256_loadu_ps(p.add(c)) });
    }
    let mut lanes = [0.0f32; 16];
    // SAFETY: 8 writable values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    let max = lanes[..8]
        .iter()
        .chain(&x[body..])
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let vmax = _mm256_set1_ps(max);
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for c in (0..body).step_by(16) {
        // SAFETY: c + 16 <= body <= n.
        unsafe {
            let e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(c)), vmax));
            let e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(c + 8)), vmax));
            _mm256_storeu_ps(p.add(c), e0);
            _mm256_storeu_ps(p.add(c + 8), e1);
            lo = _mm256_add_ps(lo, e0);
            hi = _mm256_add_ps(hi, e1);
        }
    }
    // SAFETY: 16 writable values.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
    }
    for (c, v) in x.iter_mut().enumerate().skip(body) {
        *v = exp(*v - max);
        lanes[c % 16] += *v;
    }
    let sum = fold_lanes(&lanes);
    let vsum = _mm256_set1_ps(sum);
    for c in (0..body).step_by(8) {
        // SAFETY: c + 8 <= body <= n.
        unsafe { _mm256_storeu_ps(p.add(c), _mm256_div_ps(_mm256_loadu_ps(p.add(c)), vsum)) };
    }
    x[body..].iter_mut().for_each(|v| *v /= sum);
}

/// Horizontal sum of 8 lanes.
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)))
}

/// 8 cache values at `p` (f16 when `F16`, else f32) widened to f32.
///
/// # Safety
/// 8 values must be readable at `p`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn load_cache<const F16: bool>(p: *const u8) -> __m256 {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if F16 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        } else {
            _mm256_loadu_ps(p.cast())
        }
    }
}

/// See [`super::attention::scores`], whose reference this matches bit for bit (lanes 0–7 and 8–15
/// of each 16 values in two registers, multiply then add); `keys.dim` must be a multiple of 16.
/// Each key row is widened once and multiplied into up to four query heads.
///
/// # Safety
/// The CPU must support AVX2 and F16C; lengths as `scores` checks.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn attention_scores(q: &[f32], keys: CacheRows, scale: f32, out: &mut [f32]) {
    let d = keys.dim;
    let f16 = keys.kind == FloatKind::F16;
    let mut g = 0;
    while g < q.len() / d {
        let (q, out) = (&q[g * d..], &mut out[g * keys.rows..]);
        // SAFETY: the CPU features are this function's; `q` holds `take` heads and `out` `take` rows.
        let take = unsafe {
            match ((q.len() / d).min(4), f16) {
                (4, true) => scores_heads::<4, true>(q, keys, scale, out),
                (4, false) => scores_heads::<4, false>(q, keys, scale, out),
                (3, true) => scores_heads::<3, true>(q, keys, scale, out),
                (3, false) => scores_heads::<3, false>(q, keys, scale, out),
                (2, true) => scores_heads::<2, true>(q, keys, scale, out),
                (2, false) => scores_heads::<2, false>(q, keys, scale, out),
                (_, true) => scores_heads::<1, true>(q, keys, scale, out),
                (_, false) => scores_heads::<1, false>(q, keys, scale, out),
            }
        };
        g += take;
    }
}

/// Scores of the first `G` heads of `q` into the first `G` rows of `out`; returns `G`.
///
/// # Safety
/// As [`attention_scores`]; `q` holds at least `G` heads and `out` `G · keys.rows` values.
#[target_feature(enable = "avx2,f16c")]
unsafe fn scores_heads<const G: usize, const F16: bool>(
    q: &[f32],
    keys: CacheRows,
    scale: f32,
    out: &mut [f32],
) -> usize {
    let (d, n, width) = (keys.dim, keys.rows, keys.kind.bytes());
    debug_assert!(q.len() >= G * d && out.len() >= G * n && d % 16 == 0);
    for j in 0..n {
        let row = keys.data[j * keys.stride..].as_ptr();
        // Two accumulators per head: two independent add chains, and the reference's lane order.
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for c in (0..d).step_by(16) {
            // SAFETY: c + 16 <= d values of row j lie within `keys.data` (checked by the caller).
            let (k0, k1) = unsafe {
                (
                    load_cache::<F16>(row.add(c * width)),
                    load_cache::<F16>(row.add((c + 8) * width)),
                )
            };
            for (h, acc) in acc.iter_mut().enumerate() {
                // SAFETY: head h < G has d values in `q`, and c + 16 <= d.
                let (q0, q1) = unsafe {
                    let p = q.as_ptr().add(h * d + c);
                    (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                };
                acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(q0, k0));
                acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(q1, k1));
            }
        }
        for (h, acc) in acc.iter().enumerate() {
            out[h * n + j] = hsum(_mm256_add_ps(acc[0], acc[1])) * scale;
        }
    }
    G
}

/// See [`super::attention::accumulate`], whose reference this matches bit for bit (multiply then
/// add, rows in order); `values.dim` must be a multiple of 16. Sixteen output columns of up to four
/// heads stay in registers while a block of value rows is streamed past them.
///
/// # Safety
/// The CPU must support AVX2 and F16C; lengths as `accumulate` checks.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn attention_accumulate(p: &[f32], values: CacheRows, out: &mut [f32]) {
    let (d, n) = (values.dim, values.rows);
    let f16 = values.kind == FloatKind::F16;
    let mut g = 0;
    while g < out.len() / d {
        let (p, out) = (&p[g * n..], &mut out[g * d..]);
        // SAFETY: the CPU features are this function's; `p` holds `take` rows and `out` `take` heads.
        let take = unsafe {
            match ((out.len() / d).min(4), f16) {
                (4, true) => accumulate_heads::<4, true>(p, values, out),
                (4, false) => accumulate_heads::<4, false>(p, values, out),
                (3, true) => accumulate_heads::<3, true>(p, values, out),
                (3, false) => accumulate_heads::<3, false>(p, values, out),
                (2, true) => accumulate_heads::<2, true>(p, values, out),
                (2, false) => accumulate_heads::<2, false>(p, values, out),
                (_, true) => accumulate_heads::<1, true>(p, values, out),
                (_, false) => accumulate_heads::<1, false>(p, values, out),
            }
        };
        g += take;
    }
}

/// Accumulation into the first `G` heads of `out`; returns `G`.
///
/// # Safety
/// As [`attention_accumulate`]; `p` holds at least `G · values.rows` and `out` `G · dim` values.
#[target_feature(enable = "avx2,f16c")]
unsafe fn accumulate_heads<const G: usize, const F16: bool>(
    p: &[f32],
    values: CacheRows,
    out: &mut [f32],
) -> usize {
    let (d, n) = (values.dim, values.rows);
    debug_assert!(p.len() >= G * n && out.len() >= G * d && d % 16 == 0);
    // Rows in blocks that stay in L1 while every 16 columns pass over them; each output value
    // still takes its rows in order, as the reference does.
    for start in (0..n).step_by(VALUE_BLOCK) {
        let rows = start..(start + VALUE_BLOCK).min(n);
        for c in (0..d).step_by(16) {
            // SAFETY: as described for the block.
            unsafe { accumulate_block::<G, F16>(p, values, rows.clone(), c, out) };
        }
    }
    G
}

/// Value rows per block of [`accumulate_heads`]: 16 KiB of f16 rows of 128 values.
const VALUE_BLOCK: usize = 64;

/// Rows `rows` of the values times their weights, added to columns `c..c + 16` of the first `G`
/// heads of `out`. Meanwhile the next block's rows are asked for, in address order and spread
/// over its passes: the passes read every row's columns `c..c + 16` only, a stride the hardware
/// prefetchers left waiting on memory (attention at depth 2048 took half as long again).
///
/// # Safety
/// As [`accumulate_heads`]; `rows.end <= values.rows` and `c + 16 <= values.dim`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn accumulate_block<const G: usize, const F16: bool>(
    p: &[f32],
    values: CacheRows,
    rows: Range<usize>,
    c: usize,
    out: &mut [f32],
) {
    let (d, n, width) = (values.dim, values.rows, values.kind.bytes());
    {
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for (h, acc) in acc.iter_mut().enumerate() {
            // SAFETY: head h < G has d values in `out`, and c + 16 <= d.
            unsafe {
                let o = out.as_ptr().add(h * d + c);
                *acc = [_mm256_loadu_ps(o), _mm256_loadu_ps(o.add(8))];
            }
        }
        // This pass's share of the next block: `step` bytes per row, from `ahead` on.
        let step = (16 * values.stride).div_ceil(d);
        let ahead = rows.end * values.stride + c / 16 * rows.len() * step;
        for j in rows.clone() {
            super::prefetch_line(values.data, ahead + (j - rows.start) * step);
            // SAFETY: c + 16 <= d values of row j lie within `values.data` (checked by the caller).
            let (v0, v1) = unsafe {
                let row = values.data.as_ptr().add(j * values.stride + c * width);
                (
                    load_cache::<F16>(row),
                    load_cache::<F16>(row.add(8 * width)),
                )
            };
            for (h, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_set1_ps(p[h * n + j]);
                acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(w, v0));
                acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(w, v1));
            }
        }
        for (h, acc) in acc.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe {
                let o = out.as_mut_ptr().add(h * d + c);
                _mm256_storeu_ps(o, acc[0]);
                _mm256_storeu_ps(o.add(8), acc[1]);
            }
        }
    }
}

/// Narrow f32 values to f16, rounding to nearest even (as `half::f16::from_f32`).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f32_to_f16(src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 floats at i and 8 halves at 2i are in bounds.
        unsafe {
            let h =
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
            _mm_storeu_si128(dst.as_mut_ptr().add(2 * i).cast(), h);
        }
        i += 8;
    }
    for k in i..n {
        dst[2 * k..2 * k + 2].copy_from_slice(&half::f16::from_f32(src[k]).to_le_bytes());
    }
}
