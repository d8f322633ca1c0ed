//! Every kernel path against an independent oracle: the dense matrix from the format crate's reference
//! unpacker times the activations, in i64. Shapes deliberately miss every block and tile multiple.

use bitnet_format::{TernaryLayout, ternary};
use bitnet_run::kernels::activation::QuantizedActs;
use bitnet_run::kernels::float::{self, DenseInput, DenseKind, DenseMatrix, FloatKind};
use bitnet_run::kernels::{Isa, KernelPath, Packing, TernaryMatrix, scale_tile, ternary_matmul};
use proptest::prelude::*;

fn available_paths() -> Vec<KernelPath> {
    let paths = KernelPath::available();
    eprintln!("kernel paths tested on this CPU: {paths:?}");
    paths
}

/// Accumulators in the kernels' tile-major order, computed from the dense matrix.
fn oracle(
    values: &[i8],
    rows: usize,
    cols: usize,
    tile_rows: usize,
    x: &QuantizedActs,
) -> Vec<i32> {
    let tiles = rows.div_ceil(tile_rows);
    let mut out = vec![0i32; tiles * x.tokens * tile_rows];
    for tile in 0..tiles {
        for t in 0..x.tokens {
            for r in 0..tile_rows {
                let n = tile * tile_rows + r;
                let acc: i64 = if n < rows {
                    (0..cols)
                        .map(|k| values[n * cols + k] as i64 * x.row(t)[k] as i64)
                        .sum()
                } else {
                    0
                };
                out[(tile * x.tokens + t) * tile_rows + r] = acc as i32;
            }
        }
    }
    out
}

fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<i8>, Vec<f32>)> {
    (1usize..80, 1usize..300, 1usize..40).prop_flat_map(|(rows, cols, tokens)| {
        (
            Just(rows),
            Just(cols),
            Just(tokens),
            proptest::collection::vec(-1i8..=1, rows * cols),
            proptest::collection::vec(-50.0f32..50.0, tokens * cols),
        )
    })
}

fn check(
    layout: TernaryLayout,
    rows: usize,
    cols: usize,
    values: &[i8],
    acts: &[f32],
    paths: &[KernelPath],
) {
    let (packing, tile_rows) = Packing::of(layout).unwrap();
    let packed = ternary::pack(layout, rows as u64, cols as u64, values, 0.5).unwrap();
    let w = TernaryMatrix {
        codes: &packed[64..],
        rows,
        cols,
        tile_rows,
        packing,
        scale: 0.5,
    };
    let mut x = QuantizedActs::default();
    x.quantize(KernelPath::SCALAR, acts, cols, w.kpad());
    let expected = oracle(values, rows, cols, w.tile_rows, &x);
    for &path in paths.iter().filter(|p| p.reads_layout(layout)) {
        let mut out = vec![i32::MIN; expected.len()];
        ternary_matmul(path, &w, &x, 0..w.tiles(), &mut out);
        assert_eq!(
            out, expected,
            "{path:?} {layout:?} {rows}x{cols}, {} tokens",
            x.tokens
        );
        // A sub-range of tiles writes exactly that part.
        if w.tiles() > 1 {
            let per_tile = x.tokens * w.tile_rows;
            let mut part = vec![0i32; per_tile];
            ternary_matmul(path, &w, &x, 1..2, &mut part);
            assert_eq!(part, expected[per_tile..2 * per_tile], "{path:?} tile 1");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn ternary_kernels_equal_the_dense_oracle((rows, cols, _tokens, values, acts) in case()) {
        let paths = available_paths();
        for tile_rows in [4, 8, 16, 32] {
            check(TernaryLayout::Tiled { tile_rows }, rows, cols, &values, &acts, &paths);
            check(TernaryLayout::Base3 { tile_rows }, rows, cols, &values, &acts, &paths);
        }
    }
}

#[test]
fn extreme_activations_do_not_overflow_any_path() {
    // All +1 weights and activations at ±127/-128: the largest magnitudes the i16 steps can see.
    let (rows, cols) = (33, 16 * 9 + 5);
    let paths = available_paths();
    for weight in [-1i8, 1] {
        let values = vec![weight; rows * cols];
        for sign in [1.0f32, -1.0] {
            let acts: Vec<f32> = (0..cols * 9)
                .map(|i| {
                    if i % 7 == 0 {
                        sign * 1000.0
                    } else {
                        -sign * 999.0
                    }
                })
                .collect();
            for layout in [
                TernaryLayout::Tiled { tile_rows: 16 },
                TernaryLayout::Base3 { tile_rows: 16 },
            ] {
                check(layout, rows, cols, &values, &acts, &paths);
            }
        }
    }
}

#[test]
fn the_longest_rows_at_extreme_values_do_not_overflow_any_path() {
    // K of the 100B shape's down projection (45568): the one-token `base3` kernels sum runs of
    // blocks in i32 before dividing by 256, so their bound is on K. Every weight at the same sign
    // and every activation at ±127 makes each sum as large as it can be.
    let (rows, cols) = (16, 45568);
    let paths = available_paths();
    for (weight, act) in [(1i8, 1.0f32), (-1, 1.0), (1, -1.0)] {
        let values = vec![weight; rows * cols];
        let acts = vec![act; cols];
        for layout in [
            TernaryLayout::Tiled { tile_rows: 16 },
            TernaryLayout::Base3 { tile_rows: 16 },
        ] {
            check(layout, rows, cols, &values, &acts, &paths);
        }
    }
}

#[test]
fn real_model_shapes_match_on_every_path() {
    // 2B-4T's k/v (640 × 2560) and 1bitLLM-3B's down projection K (8640), with a prefill batch.
    let paths = available_paths();
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 33) as u32
    };
    for (rows, cols, tokens) in [(640, 2560, 1), (48, 8640, 11)] {
        let values: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let acts: Vec<f32> = (0..tokens * cols)
            .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
            .collect();
        for layout in [
            TernaryLayout::Tiled { tile_rows: 16 },
            TernaryLayout::Base3 { tile_rows: 16 },
        ] {
            check(layout, rows, cols, &values, &acts, &paths);
        }
    }
}

#[test]
fn float_kernels_agree_across_paths() {
    // 9 tokens: groups of four, four and one; 203 columns: a tail after whole vectors.
    for tokens in [1, 2, 3, 9] {
        float_kernels_agree_at(tokens);
    }
}

fn float_kernels_agree_at(tokens: usize) {
    let (rows, cols) = (7, 203);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0)
        .collect();
    let x: Vec<f32> = (0..tokens * cols)
        .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
        .collect();
    for kind in [FloatKind::F32, FloatKind::F16, FloatKind::Bf16] {
        let data: Vec<u8> = match kind {
            FloatKind::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FloatKind::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            FloatKind::Bf16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        let w = DenseMatrix {
            data: &data,
            rows,
            cols,
            kind: DenseKind::Float(kind),
        };
        let mut reference = vec![0.0f32; rows * tokens];
        float::matmul(
            KernelPath::SCALAR,
            &w,
            &DenseInput::new(KernelPath::SCALAR, &w, &x),
            0..rows,
            &mut reference,
        );
        // Independent check of the scalar path: f64 sums of the decoded values.
        for r in 0..rows {
            for t in 0..tokens {
                let exact: f64 = (0..cols)
                    .map(|k| {
                        let v = values[r * cols + k];
                        let v = match kind {
                            FloatKind::F32 => v,
                            FloatKind::F16 => half::f16::from_f32(v).to_f32(),
                            FloatKind::Bf16 => half::bf16::from_f32(v).to_f32(),
                        };
                        v as f64 * x[t * cols + k] as f64
                    })
                    .sum();
                assert!(
                    (reference[r * tokens + t] as f64 - exact).abs() < 1e-3,
                    "{kind:?} {tokens} tokens"
                );
            }
        }
        for path in available_paths() {
            let mut out = vec![0.0f32; rows * tokens];
            float::matmul(path, &w, &DenseInput::new(path, &w, &x), 0..rows, &mut out);
            for (a, b) in out.iter().zip(&reference) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{path:?} {kind:?} {tokens} tokens: {a} vs {b}"
                );
            }
        }
    }
}

/// The exact value of element `(row, col)` of a test matrix.
type ValueOf<'a> = Box<dyn Fn(usize, usize) -> f64 + 'a>;

#[test]
fn fused_dense_products_agree_with_f64_on_every_path() {
    // The fused kernels take one token (generation) or several (a batched step) in groups of up to
    // four, from two tokens in groups of three, two and one rows (AVX2) or six, four, three, two
    // and one (AVX-512): odd sizes hit the lane tails, 4 rows three and one, 9 rows three threes or
    // six and three, 6 tokens a group of four and one of two.
    for (rows, cols, tokens) in [
        (1usize, 5usize, 1usize),
        (7, 203, 1),
        (7, 203, 2),
        (7, 203, 6),
        (10, 64, 3),
        (5, 1100, 3),
        (13, 2560, 1),
        (13, 2560, 2),
        (13, 2560, 6),
    ] {
        let x: Vec<f32> = (0..tokens * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
            .collect();
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0)
            .collect();
        let mut i8_data: Vec<u8> = (0..rows)
            .flat_map(|r| (0.25f32 + r as f32).to_le_bytes())
            .collect();
        i8_data.resize((rows * 4).next_multiple_of(64), 0);
        i8_data.extend((0..rows * cols).map(|i| (i * 37 % 256) as u8));
        let cases: [(DenseKind, Vec<u8>, ValueOf); 3] = [
            (
                DenseKind::Float(FloatKind::F16),
                values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
                Box::new(|r, c| half::f16::from_f32(values[r * cols + c]).to_f32() as f64),
            ),
            (
                DenseKind::Float(FloatKind::Bf16),
                values
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
                Box::new(|r, c| half::bf16::from_f32(values[r * cols + c]).to_f32() as f64),
            ),
            (
                DenseKind::I8Row,
                i8_data.clone(),
                Box::new(|r, c| {
                    i8_data[(rows * 4).next_multiple_of(64) + r * cols + c] as i8 as f64
                        * (0.25 + r as f64)
                }),
            ),
        ];
        for (kind, data, value) in &cases {
            let w = DenseMatrix {
                data,
                rows,
                cols,
                kind: *kind,
            };
            for path in available_paths() {
                let mut out = vec![0.0f32; (rows - 1) * tokens];
                float::matmul(path, &w, &DenseInput::new(path, &w, &x), 1..rows, &mut out);
                for (j, got) in out.iter().enumerate() {
                    let (i, t) = (j / tokens, j % tokens);
                    let exact: f64 = (0..cols)
                        .map(|c| value(i + 1, c) * x[t * cols + c] as f64)
                        .sum();
                    assert!(
                        (*got as f64 - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                        "{path:?} {kind:?} {rows}x{cols} row {} token {t}: {got} vs {exact}",
                        i + 1
                    );
                }
            }
        }
    }
}

#[test]
fn i8_row_rows_decode_exactly_on_every_path() {
    let (rows, cols) = (3usize, 77usize);
    let scales = [0.5f32, 1.0 / 127.0, 3.25];
    let mut data: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    data.resize(64, 0);
    data.extend((0..rows * cols).map(|i| (i * 37 % 256) as u8));
    let w = DenseMatrix {
        data: &data,
        rows,
        cols,
        kind: DenseKind::I8Row,
    };
    for path in available_paths() {
        for r in 0..rows {
            let mut out = vec![0.0f32; cols];
            w.row_into(path, r, &mut out);
            for (c, v) in out.iter().enumerate() {
                let q = data[64 + r * cols + c] as i8;
                assert_eq!(*v, q as f32 * scales[r], "{path:?} row {r} col {c}");
            }
        }
    }
}

/// A tile's values: bit for bit `a as f32 / s · w` on every path, for full and partial tiles,
/// sums that `f32` cannot hold exactly (rounded to nearest even by the conversion) and outputs
/// strided as rows of a wider matrix, whose other elements stay untouched.
#[test]
fn scaled_tiles_round_like_the_scalar_expression_on_every_path() {
    let tile_rows = 16;
    let scales = [127.0f32 / 3.7, 1.0e-3, 7.0, 0.3];
    let sums: Vec<i32> = [
        i32::MIN,
        i32::MAX,
        0,
        -1,
        1,
        16_777_217,
        -16_777_219,
        123_456_789,
    ]
    .into_iter()
    .chain((0..56).map(|i: i32| i.wrapping_mul(-1_640_531_527) >> (i % 23)))
    .collect();
    let stride = 21;
    for w in [0.8125f32, 3.0e4, 1.0 / 3.0] {
        for rows in [16, 5] {
            let mut expect = vec![f32::NAN; scales.len() * stride];
            for (t, s) in scales.iter().enumerate() {
                for r in 0..rows {
                    expect[t * stride + 2 + r] = sums[t * tile_rows + r] as f32 / s * w;
                }
            }
            for path in available_paths() {
                let mut out = vec![f32::NAN; scales.len() * stride];
                // SAFETY: every token's `rows` values from `2 + t · stride` lie within `out`.
                unsafe {
                    scale_tile(
                        path,
                        &sums,
                        tile_rows,
                        rows,
                        &scales,
                        w,
                        (out.as_mut_ptr().add(2), stride),
                    )
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&out),
                    bits(&expect),
                    "{path:?}, {rows} rows, weight scale {w}"
                );
            }
        }
    }
}

#[test]
fn forcing_an_unknown_or_missing_path_is_a_clear_error() {
    let err = KernelPath::parse("neon9").unwrap_err().to_string();
    assert!(err.contains("neon9") && err.contains("scalar"), "{err}");
    let mut refused = 0;
    for isa in Isa::ALL {
        let missing = isa.missing_features();
        match KernelPath::new(isa) {
            Ok(path) => {
                assert!(missing.is_empty(), "{isa:?}");
                assert_eq!(KernelPath::parse(isa.name()).unwrap(), path);
            }
            Err(e) => {
                refused += 1;
                let err = KernelPath::parse(isa.name()).unwrap_err().to_string();
                assert_eq!(err, e.to_string());
                // Only the features this CPU lacks are named.
                let listed = err.split("lacks ").nth(1).expect("names what is missing");
                let listed = listed.split(" (").next().unwrap();
                assert_eq!(listed, missing.join(", "), "{err}");
            }
        }
    }
    // Every CPU lacks the other architecture's instruction sets.
    assert!(refused >= 2);
    assert_eq!(
        KernelPath::available().len() + refused,
        Isa::ALL.len(),
        "every instruction set is either available or refused"
    );
}

/// Cache rows of `kind` (`n` rows of `dim`, `stride` values apart) and their exact values.
fn cache_rows(
    kind: FloatKind,
    n: usize,
    dim: usize,
    stride: usize,
    seed: usize,
) -> (Vec<u8>, Vec<f64>) {
    let mut bytes = Vec::new();
    let mut exact = Vec::new();
    for j in 0..n {
        for c in 0..stride {
            let v = (((j * 31 + c * 17 + seed) % 97) as f32 - 48.0) / 24.0;
            match kind {
                FloatKind::F16 => {
                    let h = half::f16::from_f32(v);
                    bytes.extend(h.to_le_bytes());
                    if c < dim {
                        exact.push(h.to_f32() as f64);
                    }
                }
                _ => {
                    bytes.extend(v.to_le_bytes());
                    if c < dim {
                        exact.push(v as f64);
                    }
                }
            }
        }
    }
    (bytes, exact)
}

#[test]
fn attention_kernels_equal_the_reference_bit_for_bit_and_f64_closely() {
    use bitnet_run::kernels::attention::{self, CacheRows};
    // Head sizes on and off the SIMD kernels' 16-value step, groups on both sides of their four
    // heads at a time, and strides wider than a head (other KV heads in between).
    for kind in [FloatKind::F16, FloatKind::F32] {
        for (dim, groups, n, stride) in [
            (16, 1, 1, 16),
            (16, 4, 33, 48),
            (64, 3, 7, 128),
            (128, 5, 100, 640),
            (128, 8, 20, 256),
            (12, 2, 9, 24),
        ] {
            let (data, exact) = cache_rows(kind, n, dim, stride, dim + groups);
            let rows = CacheRows {
                data: &data,
                kind,
                stride: stride * kind.bytes(),
                dim,
                rows: n,
            };
            let q: Vec<f32> = (0..groups * dim)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) / 16.0)
                .collect();
            let p: Vec<f32> = (0..groups * n).map(|i| (i % 5) as f32 / 8.0).collect();
            let init: Vec<f32> = (0..groups * dim).map(|i| (i % 3) as f32).collect();
            let run = |path| {
                let mut scores = vec![0.0f32; groups * n];
                attention::scores(path, &q, rows, 0.5, &mut scores);
                let mut out = init.clone();
                attention::accumulate(path, &p, rows, &mut out);
                (scores, out)
            };
            let reference = run(KernelPath::SCALAR);
            for path in available_paths() {
                let (scores, out) = run(path);
                // The paths promise the reference's exact float operations, not just its accuracy.
                assert_eq!(
                    (&scores, &out),
                    (&reference.0, &reference.1),
                    "{path:?} {kind:?} d{dim} g{groups}"
                );
                for g in 0..groups {
                    for j in 0..n {
                        let want: f64 = (0..dim)
                            .map(|c| q[g * dim + c] as f64 * exact[j * dim + c])
                            .sum::<f64>()
                            * 0.5;
                        let got = scores[g * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{path:?} {kind:?} d{dim} g{groups} score ({g}, {j}): {got} vs {want}"
                        );
                    }
                    for c in 0..dim {
                        let want = init[g * dim + c] as f64
                            + (0..n)
                                .map(|j| p[g * n + j] as f64 * exact[j * dim + c])
                                .sum::<f64>();
                        let got = out[g * dim + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{path:?} {kind:?} d{dim} g{groups} out ({g}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// The exponential attention uses is within 2 ulp of the exact one (f64) over its whole range,
/// 1 at 0, and 0 below its cut-off; every path's softmax equals the reference bit for bit and the
/// exact softmax closely, for rows on and off the SIMD kernels' 16-value steps, with far-apart
/// scores and ties.
#[test]
fn attention_softmax_is_exact_to_2_ulp_and_equal_on_every_path() {
    use bitnet_run::kernels::attention::{exp, softmax_rows};
    let ulps = |got: f32, want: f64| {
        let w = want as f32;
        (got.to_bits() as i64 - w.to_bits() as i64).abs()
    };
    let mut worst = 0;
    for i in 0..=870_000 {
        let x = -(i as f32) * 1e-4;
        let want = (x as f64).exp();
        if want >= f32::MIN_POSITIVE as f64 {
            worst = worst.max(ulps(exp(x), want));
        }
    }
    assert!(worst <= 2, "{worst} ulp");
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(-87.5), 0.0);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);

    for n in [1, 2, 7, 15, 16, 17, 31, 32, 33, 100, 257] {
        // Three rows: close scores (every term counts in the sum, so its order shows), spread
        // ones, and spread ones with outliers far below and above.
        let rows = 3;
        let x: Vec<f32> = (0..rows * n)
            .map(|i| match (i / n, i % 11) {
                (0, _) => -((i * 7919 % 1000) as f32) / 997.0,
                (2, 0) => -200.0,
                (2, 5) => 30.0,
                _ => ((i * 37 % 101) as f32 - 50.0) / 7.0,
            })
            .collect();
        let run = |path| {
            let mut y = x.clone();
            softmax_rows(path, &mut y, n);
            y
        };
        let reference = run(KernelPath::SCALAR);
        for path in available_paths() {
            assert_eq!(run(path), reference, "{path:?} n = {n}");
        }
        for (row, y) in x.chunks(n).zip(reference.chunks(n)) {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let total: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (&v, &p) in row.iter().zip(y) {
                let want = (v as f64 - max).exp() / total;
                // `v − max` is rounded to f32: a relative error of |v − max| · 2^-24 in e^(v − max).
                let tolerance = (2e-6 + (v as f64 - max).abs() * 6e-8) * want + 1e-30;
                assert!(
                    (p as f64 - want).abs() <= tolerance,
                    "n = {n}: {p} vs {want}"
                );
            }
        }
    }
}

#[test]
fn f16_encoding_rounds_like_the_half_crate_on_every_path() {
    // Ties, subnormals, overflow to infinity, signed zeros and NaN, then a sweep of ordinary values;
    // 37 values, so the SIMD paths' 8-value steps leave a tail.
    let mut src = vec![
        1.0 + f32::EPSILON * 4096.0, // exactly halfway between two f16 values
        1.0 + f32::EPSILON * 12288.0,
        5.960_464_5e-8,
        2.980_232_2e-8,
        6.0e-5,
        65504.0,
        65520.0,
        1.0e6,
        -1.0e6,
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
    ];
    src.extend((0..24).map(|i| (i as f32 - 12.0) * 0.123_456_79));
    for path in available_paths() {
        let mut got = vec![0u8; 2 * src.len()];
        float::encode_f16(path, &src, &mut got);
        for (i, (v, g)) in src.iter().zip(got.chunks_exact(2)).enumerate() {
            let want = half::f16::from_f32(*v);
            let got = half::f16::from_le_bytes([g[0], g[1]]);
            if want.is_nan() {
                assert!(got.is_nan(), "{path:?} value {i}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{path:?} value {i}: {v}");
            }
        }
    }
}

/// Token rows of fixed codes (not quantized from floats: quantization never yields -128).
fn fixed_acts(
    tokens: usize,
    cols: usize,
    kpad: usize,
    code: impl Fn(usize, usize) -> i8,
) -> QuantizedActs {
    let mut q = vec![0i8; tokens * kpad];
    for (t, row) in q.chunks_exact_mut(kpad).enumerate() {
        for (k, v) in row[..cols].iter_mut().enumerate() {
            *v = code(t, k);
        }
    }
    let sum = q
        .chunks_exact(kpad)
        .map(|r| r.iter().map(|&v| v as i32).sum())
        .collect();
    QuantizedActs {
        q,
        scale: vec![1.0; tokens],
        sum,
        tokens,
        kpad,
        grouped: Default::default(),
    }
}

#[test]
fn i16_runs_hold_the_extreme_products_on_every_path() {
    // The AVX2 kernel adds 64 planes in i16 before widening (16 blocks of `tiled`, 12 of
    // `base3`): with every weight +1 (code 2) and every activation -128, a `tiled` run reaches
    // exactly -32768, the i16 minimum (and 32512 at +127); one block more would wrap, and so would
    // a 13th `base3` block. The plain NEON kernel adds 128 planes in i16 (32 blocks of `tiled`, 25
    // of `base3`), one product per plane and lane: at most ±16384. 35 blocks: whole runs and a
    // partial one on both; the token counts take every register block size (32, 16, 8, 4, 2, 1 on
    // x86; 4 and 1 on NEON's 4-row tiles) and mix them. Weights -1 (code 0) and alternating signs
    // too.
    let paths = available_paths();
    for (layout, weight) in [
        TernaryLayout::Tiled { tile_rows: 16 },
        TernaryLayout::Base3 { tile_rows: 16 },
        TernaryLayout::Tiled { tile_rows: 4 },
        TernaryLayout::Base3 { tile_rows: 4 },
    ]
    .into_iter()
    .flat_map(|l| [(l, 1i8), (l, -1)])
    {
        let (packing, tile_rows) = Packing::of(layout).unwrap();
        let (rows, cols) = (24, packing.block_k() * 35);
        let values = vec![weight; rows * cols];
        let packed = ternary::pack(layout, rows as u64, cols as u64, &values, 1.0).unwrap();
        let w = TernaryMatrix {
            codes: &packed[64..],
            rows,
            cols,
            tile_rows,
            packing,
            scale: 1.0,
        };
        let patterns: [fn(usize, usize) -> i8; 3] = [
            |_, _| -128,
            |_, _| 127,
            |t, k| if (t + k) % 2 == 0 { 127 } else { -128 },
        ];
        for pattern in patterns {
            for tokens in [1, 2, 3, 4, 5, 8, 15, 16, 35, 48] {
                let x = fixed_acts(tokens, cols, w.kpad(), pattern);
                let expected = oracle(&values, rows, cols, tile_rows, &x);
                for &path in paths.iter().filter(|p| p.reads_layout(layout)) {
                    let mut out = vec![i32::MIN; expected.len()];
                    ternary_matmul(path, &w, &x, 0..w.tiles(), &mut out);
                    assert_eq!(
                        out, expected,
                        "{path:?} {layout:?} weight {weight}, {tokens} tokens"
                    );
                }
            }
        }
    }
}

#[test]
fn every_token_count_and_tile_range_matches_on_every_path() {
    // The 256-bit x86 kernels take tokens 32 at a time, then 16 (both in runs of a tile's planes
    // unpacked once), then 8, 4, 2 and 1; the AVX-512 one 16 at a time, then 8, 4, 2 and 1 (past
    // one block, unpacking each `base3` tile once for all): 1–9, 13, 16, 17, 31, 33 and 59 tokens
    // cover each register block and each mix of tails; 45 rows end in a partial tile, 343 columns
    // in a partial block (and a partial run of planes).
    let (rows, cols) = (45usize, 343usize);
    let paths = available_paths();
    let mut seed = 3u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 33) as u32
    };
    let values: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
    for tokens in (1..=9).chain([13, 16, 17, 31, 33, 59]) {
        let acts: Vec<f32> = (0..tokens * cols)
            .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
            .collect();
        for tile_rows in [4, 8, 16, 32] {
            for layout in [
                TernaryLayout::Tiled { tile_rows },
                TernaryLayout::Base3 { tile_rows },
            ] {
                check(layout, rows, cols, &values, &acts, &paths);
            }
        }
    }
}
