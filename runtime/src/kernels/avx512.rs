//! AVX-512 kernels (F, BW, VNNI; VL where 128-bit operations must reach the upper 16 registers). The ternary kernel reads 16-row tiles: one 64-byte block gives
//! `P` vectors of unsigned codes `t + 1` in `vpdpbusd` operand shape (four by shift-and-mask for
//! `tiled`, five base-3 digits for `base3`: [`Planes`]), each multiplied by one broadcast activation
//! quad; `Σ q` is subtracted at the end to undo the `+ 1`.

use std::arch::x86_64::*;
use std::ops::Range;

use super::activation::{QuantizedActs, token_groups};
use super::prefetch;
use super::ternary::TernaryMatrix;

/// Tokens per register block in the matrix-matrix kernel: enough independent accumulator chains to
/// keep `vpdpbusd` busy while each unpacked block is reused across all of them. 16 accumulators and
/// a block's planes fit the 32 zmm registers; against 8, prompts of the 2B-4T shape ran 6% faster
/// with `tiled16` and 12% with `base3x16` (whose unpacking costs more, so sharing it pays more).
const TOKEN_BLOCK: usize = 16;

/// See [`super::ternary_matmul`]; `w.tile_rows` must be 16 and `U` unpack `w.packing` into `P`
/// planes.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, and the slice lengths must be as `ternary_matmul`
/// asserts.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn ternary_tiles<const P: usize, U: Planes<P>>(
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    std::thread_local! {
        /// Each thread's unpacked tile ([`Planes::UNPACK_ONCE`]), reused across calls.
        static TILE_PLANES: std::cell::RefCell<Vec<__m512i>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (k_blocks, tile_bytes, tokens) = (w.k_blocks(), w.tile_bytes(), x.tokens);
    let unpack = U::UNPACK_ONCE && tokens > TOKEN_BLOCK;
    let mut planes = TILE_PLANES.take();
    for (i, tile) in tiles.enumerate() {
        let codes = &w.codes[tile * tile_bytes..(tile + 1) * tile_bytes];
        let out_tile = &mut out[i * tokens * 16..(i + 1) * tokens * 16];
        if unpack {
            // Every plane is written below: no clearing.
            planes.resize(k_blocks * P, _mm512_setzero_si512());
            for (kb, planes) in planes.chunks_exact_mut(P).enumerate() {
                prefetch(codes, kb * 64);
                // SAFETY: `kb < k_blocks`, so its 64 bytes are in `codes`; `U` is compiled for
                // this function's features.
                planes.copy_from_slice(&unsafe {
                    U::planes(_mm512_loadu_si512(codes.as_ptr().add(kb * 64).cast()))
                });
            }
        }
        for (t, m) in token_groups(tokens, TOKEN_BLOCK) {
            let o = &mut out_tile[t * 16..(t + m) * 16];
            let p = &planes[..];
            // SAFETY: same CPU features as this function; `codes` holds `k_blocks` blocks of 64
            // bytes (and `p`, when unpacking, their `P · k_blocks` planes), each token row
            // `kpad = 4P · k_blocks` codes, tokens `t .. t + m` exist and `o` holds their `m · 16`
            // accumulators.
            unsafe {
                if unpack {
                    group::<P, U, true>(m, codes, p, k_blocks, x, t, o)
                } else {
                    group::<P, U, false>(m, codes, p, k_blocks, x, t, o)
                }
            }
        }
    }
    TILE_PLANES.set(planes);
}

/// How a packing's 64-byte block splits into `P` code planes (plane `p`: columns `4p .. 4p+3` of
/// each row in lane `r`). `unsafe` only because compiled with AVX-512 BW: callers must run on a CPU
/// that has it.
pub trait Planes<const P: usize>: Sized {
    /// Whether, with several register blocks of tokens, the kernel unpacks each tile once into a
    /// buffer for all of them instead of once per block. It pays for `base3`'s digits (prompts of
    /// 128 tokens ran 6–10% faster) but not for `tiled`'s shift and mask, cheaper than storing and
    /// reloading the planes.
    const UNPACK_ONCE: bool;

    unsafe fn planes(v: __m512i) -> [__m512i; P];

    /// One token against one tile, `out` its 16 accumulators, with whatever the packing allows
    /// instead of [`Planes::planes`]: one token uses each plane once.
    unsafe fn one_token(codes: &[u8], k_blocks: usize, q: &[i8], sum: i32, out: &mut [i32]);
}

/// `tiled`: four 2-bit fields per byte ([`super::avx2::bits2_planes!`] at 512 bits).
pub struct Bits2;

impl Planes<4> for Bits2 {
    const UNPACK_ONCE: bool = false;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn planes(v: __m512i) -> [__m512i; 4] {
        super::avx2::bits2_planes!(v, _mm512_set1_epi8, _mm512_and_si512, _mm512_srli_epi16)
    }

    /// One token with each plane masked in place, not shifted down: plane `p` is `4^p · u`, its
    /// own accumulator sums `4^p` times the plane's products, and the total divides that out
    /// exactly. Four instructions per block to unpack instead of seven, and four independent
    /// `vpdpbusd` chains.
    ///
    /// Bound: one `vpdpbusd` adds at most 4 · 4³ · 2 · 128 = 65536 in magnitude to plane 3's
    /// lanes, so a run of [`SCALED_RUN`] blocks stays within 2⁹ · 2¹⁶ = 2²⁵ (runs this short
    /// cost nothing measurable, and the tests' longest rows cross several).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn one_token(codes: &[u8], k_blocks: usize, q: &[i8], sum: i32, out: &mut [i32]) {
        debug_assert!(codes.len() >= k_blocks * 64 && q.len() >= k_blocks * 16 && out.len() >= 16);
        let masks: [__m512i; 4] = std::array::from_fn(|p| _mm512_set1_epi8(3 << (2 * p)));
        let mut total = _mm512_set1_epi32(-sum);
        let mut run = 0;
        while run < k_blocks {
            let end = k_blocks.min(run + SCALED_RUN);
            let mut acc = [_mm512_setzero_si512(); 4];
            for kb in run..end {
                prefetch(codes, kb * 64);
                // SAFETY: `kb < k_blocks`, so the 64 bytes at `kb · 64` and the 16 codes at
                // `kb · 16` exist.
                let (v, quads) = unsafe {
                    (
                        _mm512_loadu_si512(codes.as_ptr().add(kb * 64).cast()),
                        q.as_ptr().add(kb * 16).cast::<i32>(),
                    )
                };
                for p in 0..4 {
                    // SAFETY: `p < 4` quads of the block's 16 codes.
                    let a = _mm512_set1_epi32(unsafe { quads.add(p).read_unaligned() });
                    acc[p] = _mm512_dpbusd_epi32(acc[p], _mm512_and_si512(v, masks[p]), a);
                }
            }
            total = _mm512_add_epi32(total, acc[0]);
            total = _mm512_add_epi32(total, _mm512_srai_epi32::<2>(acc[1]));
            total = _mm512_add_epi32(total, _mm512_srai_epi32::<4>(acc[2]));
            total = _mm512_add_epi32(total, _mm512_srai_epi32::<6>(acc[3]));
            run = end;
        }
        // SAFETY: `out` has at least 16 elements.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), total) };
    }
}

/// Blocks per run of [`Bits2`]'s one-token kernel (its bound is proved there).
const SCALED_RUN: usize = 512;

/// Blocks per run of [`Base3`]'s one-token kernel (its bound is proved there).
const LINEAR_RUN: usize = 512;

/// `base3`: five base-3 digits per byte (SPEC.md §6.4): digit `p` of byte `b` is `[x ≥ 86] + [x ≥
/// 171]` with `x = b·3^p mod 256`, here two unsigned compares into masks and two masked moves.
pub struct Base3;

impl Planes<5> for Base3 {
    const UNPACK_ONCE: bool = true;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn planes(v: __m512i) -> [__m512i; 5] {
        let (t86, t171) = (_mm512_set1_epi8(86), _mm512_set1_epi8(171u8 as i8));
        let (one, two) = (_mm512_set1_epi8(1), _mm512_set1_epi8(2));
        let mut x = v;
        std::array::from_fn(|_| {
            let (ge86, ge171) = (
                _mm512_cmpge_epu8_mask(x, t86),
                _mm512_cmpge_epu8_mask(x, t171),
            );
            let digit = _mm512_mask_mov_epi8(_mm512_maskz_mov_epi8(ge86, one), ge171, two);
            x = super::avx2::times3!(x, _mm512_add_epi8, zmm_reg);
            digit
        })
    }

    /// One token without unpacking digits. With `x_p = b·3^p mod 256`, `3x_p < 768` splits into
    /// `256 d_p + x_{p+1}`, so `256 Σ d_p a_p = 3 Σ x_p a_p − Σ x_{p+1} a_p`: two `vpdpbusd` per
    /// plane on the bytes `x_p` themselves and one [`times3`](super::avx2::times3) to the next,
    /// against six instructions to unpack a digit and one `vpdpbusd`. With several tokens the
    /// unpacked planes are shared and cost less than the second product per token.
    ///
    /// Bound: one `vpdpbusd` adds at most 4 · 255 · 128 = 130560 in magnitude to a lane, so a run
    /// of [`LINEAR_RUN`] blocks (5 planes, two sums, `3S₁ − S₂` weighing four) stays within
    /// 4 · 5 · 512 · 130560 < 2³¹ before it is divided by 256 and added to the total.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn one_token(codes: &[u8], k_blocks: usize, q: &[i8], sum: i32, out: &mut [i32]) {
        debug_assert!(codes.len() >= k_blocks * 64 && q.len() >= k_blocks * 20 && out.len() >= 16);
        let mut total = _mm512_set1_epi32(-sum);
        let mut run = 0;
        while run < k_blocks {
            let end = k_blocks.min(run + LINEAR_RUN);
            let (mut s1, mut s2) = ([_mm512_setzero_si512(); 5], [_mm512_setzero_si512(); 5]);
            for kb in run..end {
                prefetch(codes, kb * 64);
                // SAFETY: `kb < k_blocks`, so the 64 bytes at `kb · 64` and the 20 codes at
                // `kb · 20` exist.
                let (mut x, quads) = unsafe {
                    (
                        _mm512_loadu_si512(codes.as_ptr().add(kb * 64).cast()),
                        q.as_ptr().add(kb * 20).cast::<i32>(),
                    )
                };
                for p in 0..5 {
                    // SAFETY: `p < 5` quads of the block's 20 codes.
                    let a = _mm512_set1_epi32(unsafe { quads.add(p).read_unaligned() });
                    s1[p] = _mm512_dpbusd_epi32(s1[p], x, a);
                    x = super::avx2::times3!(x, _mm512_add_epi8, zmm_reg);
                    s2[p] = _mm512_dpbusd_epi32(s2[p], x, a);
                }
            }
            let s1 = s1[1..].iter().fold(s1[0], |t, &a| _mm512_add_epi32(t, a));
            let s2 = s2[1..].iter().fold(s2[0], |t, &a| _mm512_add_epi32(t, a));
            let scaled = _mm512_sub_epi32(_mm512_add_epi32(s1, _mm512_add_epi32(s1, s1)), s2);
            total = _mm512_add_epi32(total, _mm512_srai_epi32::<8>(scaled));
            run = end;
        }
        // SAFETY: `out` has at least 16 elements.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), total) };
    }
}

/// [`token_block`] for a group of `m` tokens (2, 4, 8 or [`TOKEN_BLOCK`]), or [`Planes::one_token`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group<const P: usize, U: Planes<P>, const UNPACKED: bool>(
    m: usize,
    codes: &[u8],
    planes: &[__m512i],
    k_blocks: usize,
    x: &QuantizedActs,
    t0: usize,
    out: &mut [i32],
) {
    if m == 1 {
        // SAFETY: same features; the caller's bounds.
        return unsafe { U::one_token(codes, k_blocks, x.row(t0), x.sum[t0], &mut out[..16]) };
    }
    let args = (codes, planes, k_blocks, x, t0, out);
    // SAFETY: as above.
    unsafe {
        match m {
            TOKEN_BLOCK => token_block::<TOKEN_BLOCK, 1, P, U, UNPACKED>(args),
            8 => token_block::<8, 1, P, U, UNPACKED>(args),
            4 => token_block::<4, P, P, U, UNPACKED>(args),
            _ => token_block::<2, P, P, U, UNPACKED>(args),
        }
    }
}

/// `M` tokens at once: each block is unpacked once (or, if `UNPACKED`, read from `planes`, the
/// tile's blocks unpacked in order) and used `P · M` times. Each token has `A` accumulators,
/// plane `p` adding into accumulator `p % A`: a `vpdpbusd` waits for the previous one into the same
/// accumulator (about four cycles on Zen 4), so two or four tokens with one each would keep the
/// unit half busy (2 tokens ran at half the multiply-accumulates per second of 8, 4 at 85%).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn token_block<
    const M: usize,
    const A: usize,
    const P: usize,
    U: Planes<P>,
    const UNPACKED: bool,
>(
    (codes, planes, k_blocks, x, t0, out): (
        &[u8],
        &[__m512i],
        usize,
        &QuantizedActs,
        usize,
        &mut [i32],
    ),
) {
    debug_assert!(
        codes.len() >= k_blocks * 64
            && out.len() >= M * 16
            && t0 + M <= x.tokens
            && (!UNPACKED || planes.len() == k_blocks * P)
    );
    let rows: [*const i8; M] = std::array::from_fn(|m| x.row(t0 + m).as_ptr());
    let mut acc = [[_mm512_setzero_si512(); A]; M];
    for kb in 0..k_blocks {
        let c: [__m512i; P] = if UNPACKED {
            // SAFETY: `kb < k_blocks`, so its `P` planes are in `planes`.
            std::array::from_fn(|p| unsafe { *planes.as_ptr().add(kb * P + p) })
        } else {
            prefetch(codes, kb * 64);
            // SAFETY: `kb < k_blocks`: the block is within `codes`; this function has the
            // features `U` is compiled for.
            unsafe { U::planes(_mm512_loadu_si512(codes.as_ptr().add(kb * 64).cast())) }
        };
        for (p, plane) in c.iter().enumerate() {
            for m in 0..M {
                // SAFETY: each token row holds `4P · k_blocks` codes; this reads 4 of block `kb`.
                let quad = unsafe { rows[m].add((kb * P + p) * 4).cast::<i32>().read_unaligned() };
                let a = &mut acc[m][p % A];
                *a = _mm512_dpbusd_epi32(*a, *plane, _mm512_set1_epi32(quad));
            }
        }
    }
    for (m, acc) in acc.iter().enumerate() {
        let total = acc[1..].iter().fold(acc[0], |t, &a| _mm512_add_epi32(t, a));
        let v = _mm512_sub_epi32(total, _mm512_set1_epi32(x.sum[t0 + m]));
        // SAFETY: `out` holds M · 16 accumulators.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(m * 16).cast(), v) };
    }
}

/// `Σ a[i] · b[i]` in f32 with 16-lane FMAs.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16j + 16 <= n.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(a.as_ptr().add(i + 16 * j)),
                    _mm512_loadu_ps(b.as_ptr().add(i + 16 * j)),
                )
            };
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (x, y) = unsafe {
            (
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
        i += 16;
    }
    let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut sum = _mm512_reduce_add_ps(total);
    for k in i..n {
        sum += a[k] * b[k];
    }
    sum
}

/// Widen f16 values to f32.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
pub unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: 16 halves (32 bytes) at 2i and 16 floats at i are in bounds.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(2 * i).cast());
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    for k in i..n {
        dst[k] = half::f16::from_le_bytes([src[2 * k], src[2 * k + 1]]).to_f32();
    }
}

/// Widen bf16 values to f32 (exact: a bf16 is the top half of an f32).
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
pub unsafe fn bf16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: 16 bf16 values at 2i and 16 floats at i are in bounds.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(2 * i).cast());
            let wide = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_castsi512_ps(wide));
        }
        i += 16;
    }
    for k in i..n {
        dst[k] = half::bf16::from_le_bytes([src[2 * k], src[2 * k + 1]]).to_f32();
    }
}

/// See [`super::activation::quantize_row`].
///
/// # Safety
/// The CPU must support AVX-512 F and BW; `out.len() == x.len()`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn quantize_row(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let n = x.len();
    let sign_off = _mm512_set1_epi32(0x7fff_ffff);
    let mut vmax = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) };
        vmax = _mm512_max_ps(
            vmax,
            _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), sign_off)),
        );
        i += 16;
    }
    let mut absmax = _mm512_reduce_max_ps(vmax);
    for v in &x[i..] {
        absmax = absmax.max(v.abs());
    }
    let s = 127.0 / absmax.max(1e-5);
    let vs = _mm512_set1_ps(s);
    let mut vsum = _mm512_setzero_si512();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n for both x and out.
        unsafe {
            let q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(i)), vs));
            let q8 = _mm512_cvtsepi32_epi8(q);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), q8);
            vsum = _mm512_add_epi32(vsum, _mm512_cvtepi8_epi32(q8));
        }
        i += 16;
    }
    let mut sum = _mm512_reduce_add_epi32(vsum);
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
/// The CPU must support AVX-512 F; `dst.len() == src.len()`.
#[target_feature(enable = "avx512f")]
pub unsafe fn i8_to_f32(src: &[u8], scale: f32, dst: &mut [f32]) {
    let n = dst.len();
    let s = _mm512_set1_ps(scale);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: 16 bytes at i and 16 floats at i are in bounds.
        unsafe {
            let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(src.as_ptr().add(i).cast()));
            _mm512_storeu_ps(
                dst.as_mut_ptr().add(i),
                _mm512_mul_ps(_mm512_cvtepi32_ps(q), s),
            );
        }
        i += 16;
    }
    for k in i..n {
        dst[k] = src[k] as i8 as f32 * scale;
    }
}

super::avx2::dense_rows_kernel!(
    "avx512f",
    __m512,
    16,
    6,
    2,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_reduce_add_ps,
    // SAFETY: the caller passes a pointer with 16 elements readable.
    |p: *const u8, kind: u8| -> __m512 {
        unsafe {
            match kind {
                0 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
                1 => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                    _mm256_loadu_si256(p.cast()),
                ))),
                _ => _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))),
            }
        }
    }
);

// `vpdpbusd` multiplies the unsigned nibbles by the signed activation codes, eight times into
// lanes that start from the lane corrections, so that lane `p` ends with block
// `4 (p mod 4) + p / 4`'s exact `Σ (n - 8) · q`. Eight tokens per register block.
super::avx2::q4_kernel!(
    "avx512f,avx512bw,avx512vl,avx512vnni",
    __m512i,
    __m512,
    16,
    8,
    [4, 2],
    _mm512_loadu_si512,
    _mm512_loadu_ps,
    _mm512_set1_epi8,
    _mm512_setzero_ps,
    _mm512_unpacklo_epi32,
    _mm512_unpackhi_epi32,
    _mm512_unpacklo_epi64,
    _mm512_unpackhi_epi64,
    _mm512_and_si512,
    _mm512_srli_epi16,
    _mm512_cvtepi32_ps,
    _mm512_mul_ps,
    _mm512_fmadd_ps,
    // SAFETY: the caller passes 16 f16 scales; lane `p` takes block `4 (p mod 4) + p / 4`'s.
    |s: *const u8| unsafe {
        let order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
        _mm512_permutexvar_ps(order, _mm512_cvtph_ps(_mm256_loadu_si256(s.cast())))
    },
    |c: __m512i, lo: &[__m512i; 4], hi: &[__m512i; 4], a: &[__m512i; 8]| {
        // Two chains, low and high halves, so that each waits for half as many.
        let (mut low, mut high) = (c, _mm512_setzero_si512());
        for k in 0..4 {
            low = _mm512_dpbusd_epi32(low, lo[k], a[2 * k]);
            high = _mm512_dpbusd_epi32(high, hi[k], a[2 * k + 1]);
        }
        _mm512_add_epi32(low, high)
    },
    hsum16
);

/// The sum of 16 lanes by halves: `v[i] + v[i + 8]`, then `+ 4`, `+ 2` and `+ 1` apart, the
/// association that [`q4_tiles`] repeats on whole vectors.
#[inline]
#[target_feature(enable = "avx512f")]
fn hsum16(v: __m512) -> f32 {
    let h8 = _mm512_castps512_ps256(_mm512_add_ps(
        v,
        _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v),
    ));
    let h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps::<1>(h8));
    let h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
    _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps::<1>(h2, h2)))
}

/// Tokens per register block of [`q4_tiles`]: eight unpacked code vectors, the scales and two
/// vectors per token fill most of the 32 zmm registers.
const Q4_TILE_TOKENS: usize = 8;

/// See [`super::q4::matmul_tiles`]: per tile of 16 rows and register block of up to eight
/// tokens, each block's codes unpacked once into eight vectors (16 rows × 4 columns each), which
/// `vpdpbusd` multiplies by each token's broadcast activation quads. Lane sums and their f32
/// scaling as in the row kernel ([`q4_rows`]), lane by lane ([`super::q4::Q4Tiles::order`]).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI; `acts` must be quantized for this path with
/// `acts.cols == tiles.geometry.cols`, `rows.end <= tiles.geometry.rows` and
/// `out.len() == rows.len() · acts.tokens`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q4_tiles(
    tiles: &super::q4::Q4Tiles,
    acts: &super::q4::Q4Acts,
    rows: Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(out.len() == rows.len() * acts.tokens && rows.end <= tiles.geometry.rows);
    super::q4::for_tiles(acts, rows, out, Q4_TILE_TOKENS, |m, tile, t0, sums| {
        // SAFETY: same features; the tokens exist and `sums` holds `16 · m` values.
        unsafe {
            match m {
                Q4_TILE_TOKENS => q4_tile::<Q4_TILE_TOKENS>(tiles, tile, acts, t0, sums),
                4 => q4_tile::<4>(tiles, tile, acts, t0, sums),
                2 => q4_tile::<2>(tiles, tile, acts, t0, sums),
                _ => q4_tile::<1>(tiles, tile, acts, t0, sums),
            }
        }
    });
}

/// One tile against tokens `t0 .. t0 + M`: `sums[16 m + r]` is row `r`'s product with token
/// `t0 + m`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_tile<const M: usize>(
    tiles: &super::q4::Q4Tiles,
    tile: usize,
    acts: &super::q4::Q4Acts,
    t0: usize,
    sums: &mut [f32],
) {
    use super::q4::BLOCK;
    let nibble = _mm512_set1_epi8(0x0f);
    let q: [*const i8; M] = std::array::from_fn(|m| acts.row(t0 + m).as_ptr());
    let lanes: [_; M] = std::array::from_fn(|m| acts.lanes(t0 + m));
    // Per token, one f32 sum per lane of the row kernel's superblocks, of which `acc` is the
    // current lane's.
    let mut parts = [[_mm512_setzero_ps(); 16]; M];
    let mut acc = [_mm512_setzero_ps(); M];
    let mut lane = 0;
    for (e, &[p, l, b]) in tiles.order().iter().enumerate() {
        if p != lane {
            for m in 0..M {
                parts[m][lane] = acc[m];
                acc[m] = _mm512_setzero_ps();
            }
            lane = p;
        }
        tiles.prefetch(tile, e);
        let (codes, scales) = tiles.entry(tile, e);
        // SAFETY: an entry holds four 64-byte code vectors and 16 f16 scales.
        let (v, dw) = unsafe {
            (
                [0, 1, 2, 3].map(|i| _mm512_loadu_si512(codes.as_ptr().add(64 * i).cast())),
                _mm512_cvtph_ps(_mm256_loadu_si256(scales.as_ptr().cast())),
            )
        };
        let lo = v.map(|v| _mm512_and_si512(v, nibble));
        let hi = v.map(|v| _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble));
        for m in 0..M {
            // SAFETY: token `t0 + m` has `cols` codes, 32 of them in block `b`, and lane `l` a
            // correction and a scale.
            let (a, corr, da) = unsafe {
                (
                    q[m].add(b * BLOCK).cast::<i32>(),
                    *lanes[m].0.get_unchecked(l),
                    *lanes[m].1.get_unchecked(l),
                )
            };
            // SAFETY: quad `i < 8` of the block's 32 codes.
            let quad = |i: usize| _mm512_set1_epi32(unsafe { a.add(i).read_unaligned() });
            // Two chains, as the row kernel's.
            let (mut low, mut high) = (_mm512_set1_epi32(corr), _mm512_setzero_si512());
            for i in 0..4 {
                low = _mm512_dpbusd_epi32(low, lo[i], quad(i));
                high = _mm512_dpbusd_epi32(high, hi[i], quad(4 + i));
            }
            let dot = _mm512_add_epi32(low, high);
            acc[m] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(dot),
                _mm512_mul_ps(dw, _mm512_set1_ps(da)),
                acc[m],
            );
        }
    }
    for m in 0..M {
        parts[m][lane] = acc[m];
        // `hsum16`'s association, on 16 rows at once.
        let h8: [__m512; 8] = std::array::from_fn(|i| _mm512_add_ps(parts[m][i], parts[m][i + 8]));
        let h4: [__m512; 4] = std::array::from_fn(|i| _mm512_add_ps(h8[i], h8[i + 4]));
        let total = _mm512_add_ps(_mm512_add_ps(h4[0], h4[2]), _mm512_add_ps(h4[1], h4[3]));
        // SAFETY: `sums` holds `16 · M` values.
        unsafe { _mm512_storeu_ps(sums.as_mut_ptr().add(16 * m), total) };
    }
}
