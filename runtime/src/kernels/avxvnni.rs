//! AVX-VNNI kernels (the VEX-encoded `vpdpbusd` of Alder Lake and later Intel cores, and of AMD
//! Zen 5): the AVX2 ternary kernel ([`super::avx2::ternary_kernel!`]) with `vpdpbusd` as its
//! multiply-accumulate. Everything else on this path runs the AVX2 kernels.

use std::arch::x86_64::*;
use std::ops::Range;

use super::activation::QuantizedActs;
use super::avx2::Mac;
use super::ternary::TernaryMatrix;

/// Defines a [`Mac`] on a `vpdpbusd` form: the AVX-VNNI one here, and in the tests the AVX-512 VL
/// one and an AVX2 sequence, which compute the same on CPUs without AVX-VNNI.
macro_rules! dpbusd_mac {
    ($name:ident, $features:literal, $dpbusd:ident) => {
        /// `vpdpbusd` adds, in each row's i32 lane, the four products of unsigned codes `t + 1`
        /// with a broadcast activation quad, exactly (at most 4 · 2 · 128 per instruction, so no
        /// run limit). A full block of tokens accumulates in place: its accumulators are enough
        /// independent chains, and a temporary per token would spill registers (on a Xeon with
        /// AVX-VNNI, pp128 of the 2B-4T shape went from 68–85 to 112 tokens/s). Fewer tokens
        /// ([`Mac::step_alone`]) chain each block's planes from zero and add them once, so that
        /// consecutive blocks overlap: in place, 2 tokens ran at a third of the rate of 8.
        pub(super) struct $name;

        impl Mac for $name {
            const RUN_PLANES: usize = usize::MAX;

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn step<const P: usize>(acc: &mut __m256i, c: &[__m256i; P], a: &[__m256i; P]) {
                for p in 0..P {
                    *acc = $dpbusd(*acc, c[p], a[p]);
                }
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn step_alone<const P: usize>(
                acc: &mut __m256i,
                c: &[__m256i; P],
                a: &[__m256i; P],
            ) {
                let mut block = _mm256_setzero_si256();
                for p in 0..P {
                    block = $dpbusd(block, c[p], a[p]);
                }
                *acc = _mm256_add_epi32(*acc, block);
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn widen(acc: __m256i) -> __m256i {
                acc
            }

            /// Each accumulator's chain is `vpdpbusd` itself (5 cycles on Golden Cove, two per
            /// cycle), so at least ten chains are needed: rows of two vectors in passes of 6, 5
            /// and 5 rows (the activations of 4 vectors and 12 accumulators would spill).
            const WIDE_VECTORS: usize = 2;
            const WIDE_ACCUMULATORS: usize = 12;
        }
    };
}

/// Defines `base3_one_token` on a `vpdpbusd` form (see [`dpbusd_mac!`] for why several).
macro_rules! base3_one_token {
    ($features:literal, $dpbusd:ident) => {
        /// [`super::ternary_matmul`] for one token of `base3` without unpacking digits, as
        /// `avx512::Base3::one_token` does (the identity and the i32 bound are proved there; the
        /// runs here are as long). Each 64-byte block is two 32-byte halves (rows 0–7, 8–15);
        /// each half's two sums alternate between two accumulators by plane, so that eight
        /// `vpdpbusd` chains are in flight.
        ///
        /// # Safety
        /// The CPU must support this path's features; `w.tile_rows` must be 16, `x.tokens` 1, and
        /// the slice lengths as `ternary_matmul` asserts.
        #[target_feature(enable = $features)]
        pub unsafe fn base3_one_token(
            w: &TernaryMatrix,
            x: &QuantizedActs,
            tiles: Range<usize>,
            out: &mut [i32],
        ) {
            const RUN: usize = 512;
            let (k_blocks, tile_bytes, q) = (w.k_blocks(), w.tile_bytes(), x.row(0));
            debug_assert!(x.tokens == 1 && q.len() >= k_blocks * 20);
            for (i, tile) in tiles.enumerate() {
                let codes = &w.codes[tile * tile_bytes..(tile + 1) * tile_bytes];
                let mut total = [_mm256_set1_epi32(-x.sum[0]); 2];
                let mut run = 0;
                while run < k_blocks {
                    let end = k_blocks.min(run + RUN);
                    let mut s1 = [[_mm256_setzero_si256(); 2]; 2];
                    let mut s2 = s1;
                    for kb in run..end {
                        $crate::kernels::prefetch(codes, kb * 64);
                        // SAFETY: `kb < k_blocks`: the block's 64 bytes and its 20 codes exist.
                        let (mut v, quads) = unsafe {
                            (
                                [0, 1].map(|h| {
                                    _mm256_loadu_si256(codes.as_ptr().add(kb * 64 + 32 * h).cast())
                                }),
                                q.as_ptr().add(kb * 20).cast::<i32>(),
                            )
                        };
                        for p in 0..5 {
                            // SAFETY: quad `p < 5` of the block's 20 codes.
                            let a = _mm256_set1_epi32(unsafe { quads.add(p).read_unaligned() });
                            for h in 0..2 {
                                s1[h][p % 2] = $dpbusd(s1[h][p % 2], v[h], a);
                                v[h] =
                                    $crate::kernels::avx2::times3!(v[h], _mm256_add_epi8, ymm_reg);
                                s2[h][p % 2] = $dpbusd(s2[h][p % 2], v[h], a);
                            }
                        }
                    }
                    for h in 0..2 {
                        let s1 = _mm256_add_epi32(s1[h][0], s1[h][1]);
                        let s2 = _mm256_add_epi32(s2[h][0], s2[h][1]);
                        let scaled =
                            _mm256_sub_epi32(_mm256_add_epi32(s1, _mm256_add_epi32(s1, s1)), s2);
                        total[h] = _mm256_add_epi32(total[h], _mm256_srai_epi32::<8>(scaled));
                    }
                    run = end;
                }
                for (h, total) in total.into_iter().enumerate() {
                    // SAFETY: `out` holds 16 accumulators per tile of `tiles`.
                    unsafe {
                        _mm256_storeu_si256(out.as_mut_ptr().add(16 * i + 8 * h).cast(), total)
                    };
                }
            }
        }
    };
}

dpbusd_mac!(Dpbusd, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);

super::avx2::ternary_kernel!("avx2,avxvnni", Dpbusd);

base3_one_token!("avx2,avxvnni", _mm256_dpbusd_avx_epi32);

/// The AVX-VNNI kernel's code run with other forms of `vpdpbusd` that compute the same: the
/// AVX-512 VL instruction, on CPUs that have AVX-512 VNNI but not AVX-VNNI (AMD Zen 4, Intel Ice
/// Lake), and an exact AVX2 sequence, on every AVX2 CPU (AMD Zen 3 has neither instruction, and
/// Debian's qemu-user does not implement AVX-VNNI).
#[cfg(test)]
mod tests {
    use bitnet_format::{TernaryLayout, ternary};

    use super::*;
    use crate::kernels::ternary::Packing;
    use crate::kernels::{avx2, scalar};

    /// A module `$module` of the path's kernels built on the `vpdpbusd` form `$dpbusd` (with
    /// `$features`, through the [`Mac`] `$mac`), and its `run`.
    macro_rules! stand_in {
        ($module:ident, $mac:ident, $features:literal, $dpbusd:ident) => {
            dpbusd_mac!($mac, $features, $dpbusd);

            mod $module {
                use super::*;

                crate::kernels::avx2::ternary_kernel!($features, super::$mac);
                base3_one_token!($features, $dpbusd);

                /// Every tile of `w` against `x`, by the kernel `ternary_matmul` picks on this
                /// path for their packing and tokens.
                ///
                /// # Safety
                /// The CPU must support the features above; the lengths are those
                /// `ternary_matmul` asserts.
                pub unsafe fn run(w: &TernaryMatrix, x: &QuantizedActs, out: &mut [i32]) {
                    let tiles = 0..w.tiles();
                    // SAFETY: the caller's.
                    unsafe {
                        match w.packing {
                            Packing::Base3 if x.tokens == 1 => base3_one_token(w, x, tiles, out),
                            Packing::Base3 => ternary_tiles::<5, avx2::Base3>(w, x, tiles, out),
                            Packing::Bits2 => ternary_tiles::<4, avx2::Bits2>(w, x, tiles, out),
                        }
                    }
                }
            }
        };
    }

    stand_in!(
        evex,
        DpbusdEvex,
        "avx2,avx512vnni,avx512vl",
        _mm256_dpbusd_epi32
    );
    stand_in!(emulated, DpbusdAvx2, "avx2", dpbusd_avx2);

    /// `vpdpbusd` in AVX2: in each i32 lane, `acc` plus the four products of `a`'s unsigned bytes
    /// with `b`'s signed ones, as two `vpmaddwd` of the even and the odd bytes widened to i16
    /// (each pair sum within ±2 · 255 · 128, so exact; `vpmaddubsw` would saturate).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dpbusd_avx2(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        let a_even = _mm256_and_si256(a, _mm256_set1_epi16(0x00ff));
        let a_odd = _mm256_srli_epi16::<8>(a);
        let b_even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b));
        let b_odd = _mm256_srai_epi16::<8>(b);
        let even = _mm256_madd_epi16(a_even, b_even);
        let odd = _mm256_madd_epi16(a_odd, b_odd);
        _mm256_add_epi32(acc, _mm256_add_epi32(even, odd))
    }

    /// The states after `seed` of a 64-bit linear congruential generator (Knuth's MMIX constants):
    /// the tests' reproducible pseudo-random inputs.
    fn lcg(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            seed
        }
    }

    /// Whether this CPU has what a test needs (`has`; `lacks` names it). Where it does not, the
    /// test fails if CI lists `path` among the kernel paths this CPU must test
    /// (`BITNET_EXPECT_KERNELS`, which .ci/run reads from /proc/cpuinfo), and is skipped
    /// otherwise.
    fn runs_here(has: bool, path: &str, lacks: &str) -> bool {
        if !has {
            let listed = std::env::var("BITNET_EXPECT_KERNELS")
                .is_ok_and(|e| e.split(',').any(|p| p == path));
            assert!(
                !listed,
                "BITNET_EXPECT_KERNELS lists {path}, but this CPU lacks {lacks}"
            );
            eprintln!(
                "skipped: this CPU lacks {lacks} (fails where BITNET_EXPECT_KERNELS lists {path})"
            );
        }
        has
    }

    #[test]
    fn the_avx2_dpbusd_computes_what_vpdpbusd_is_defined_to() {
        if !runs_here(is_x86_feature_detected!("avx2"), "avx2", "AVX2") {
            return;
        }
        let mut state = lcg(5);
        let mut byte = move || (state() >> 56) as u8;
        // Random bytes, then the extremes: 255 · -128 and 255 · 127 in every product.
        let cases = (0..64)
            .map(|_| ([(); 32].map(|_| byte()), [(); 32].map(|_| byte()), byte()))
            .chain([([255; 32], [0x80; 32], 7), ([255; 32], [0x7f; 32], 9)]);
        for (a, b, start) in cases {
            let acc: [i32; 8] = std::array::from_fn(|l| (l as i32 - 4) * 1_000_003 * start as i32);
            let want: [i32; 8] = std::array::from_fn(|l| {
                acc[l]
                    + (0..4)
                        .map(|k| a[4 * l + k] as i32 * b[4 * l + k] as i8 as i32)
                        .sum::<i32>()
            });
            // SAFETY: the CPU has AVX2 (checked above); the arrays are 32 bytes.
            let got: [i32; 8] = unsafe {
                let v = |x: *const u8| _mm256_loadu_si256(x.cast());
                let r = dpbusd_avx2(v(acc.as_ptr().cast()), v(a.as_ptr()), v(b.as_ptr()));
                std::mem::transmute(r)
            };
            assert_eq!(got, want, "a {a:?} b {b:?}");
        }
    }

    #[test]
    fn the_kernel_with_the_evex_dpbusd_equals_the_scalar_reference() {
        // A CPU without them may still have AVX-VNNI: kernel_conformance covers that path
        // wherever the CPU has it, and the AVX2 form below wherever it has AVX2.
        let has = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
        if runs_here(has, "avx512", "AVX-512 VNNI/VL") {
            // SAFETY: the CPU has AVX-512 VNNI and VL (checked above) and AVX2 (every AVX-512
            // CPU has it); `equals_the_scalar_reference` passes the lengths `ternary_matmul`
            // asserts.
            equals_the_scalar_reference(|w, x, out| unsafe { evex::run(w, x, out) });
        }
    }

    #[test]
    fn the_kernel_with_the_avx2_dpbusd_equals_the_scalar_reference() {
        if runs_here(is_x86_feature_detected!("avx2"), "avx2", "AVX2") {
            // SAFETY: the CPU has AVX2 (checked above); `equals_the_scalar_reference` passes the
            // lengths `ternary_matmul` asserts.
            equals_the_scalar_reference(|w, x, out| unsafe { emulated::run(w, x, out) });
        }
    }

    /// `run(w, x, out)` (one form of the path's kernels, every tile of `w`) against the scalar
    /// reference over every token count and layout that matters.
    fn equals_the_scalar_reference(run: impl Fn(&TernaryMatrix, &QuantizedActs, &mut [i32])) {
        let mut state = lcg(11);
        let mut next = move || (state() >> 33) as i64;
        // 1–9, 17, 31, 33 and 59 tokens: every register block size and mix of tails, groups of
        // 16 and 32 tokens in the wide kernel's passes (two vectors each, rows in passes that
        // cross from one half to the other), and `base3` tiles unpacked once for several blocks
        // (past 8 tokens); 40 rows: a partial last tile;
        // 343 columns: a partial last block. The last two cases put every activation at -128,
        // one token of them over the 100B shape's longest rows (45568 columns: several runs of
        // the one-token `base3` kernel).
        let cases = (1..=9)
            .chain([17, 31, 33, 59])
            .map(|t| (t, false))
            .chain([(5, true), (1, true)]);
        for ((tokens, extreme), base3) in cases.flat_map(|c| [(c, false), (c, true)]) {
            let rows = 40usize;
            let cols = if extreme && tokens == 1 { 45568 } else { 343 };
            let values: Vec<i8> = (0..rows * cols).map(|_| (next() % 3 - 1) as i8).collect();
            let (layout, packing) = if base3 {
                (TernaryLayout::Base3 { tile_rows: 16 }, Packing::Base3)
            } else {
                (TernaryLayout::Tiled { tile_rows: 16 }, Packing::Bits2)
            };
            let packed = ternary::pack(layout, rows as u64, cols as u64, &values, 1.0).unwrap();
            let w = TernaryMatrix {
                codes: &packed[64..],
                rows,
                cols,
                tile_rows: 16,
                packing,
                scale: 1.0,
            };
            let kpad = w.kpad();
            let mut q = vec![0i8; tokens * kpad];
            for row in q.chunks_exact_mut(kpad) {
                for v in &mut row[..cols] {
                    *v = if extreme {
                        -128
                    } else {
                        (next() % 256 - 128) as i8
                    };
                }
            }
            let sum = q
                .chunks_exact(kpad)
                .map(|r| r.iter().map(|&v| v as i32).sum())
                .collect();
            let x = QuantizedActs {
                q,
                scale: vec![1.0; tokens],
                sum,
                tokens,
                kpad,
                grouped: Default::default(),
            };
            let mut expected = vec![0i32; w.tiles() * tokens * 16];
            scalar::ternary_tiles(&w, &x, 0..w.tiles(), &mut expected);
            let mut got = vec![i32::MIN; expected.len()];
            run(&w, &x, &mut got);
            assert_eq!(
                got, expected,
                "{tokens} tokens, extreme {extreme}, {layout:?}"
            );
        }
    }
}
