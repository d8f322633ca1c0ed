//! The `q4_b32` kernels against oracles built from the format crate's reference decoder: products on
//! every path against an f64 sum, the activation quantization's error bound, and row decoding.
//! Shapes miss the 4-row and the 8- and 16-block (256- and 512-column) multiples the SIMD kernels
//! step by, and include whole superblocks followed by partial ones.

use bitnet_format::q4::{self, Q4Geometry};
use bitnet_run::kernels::KernelPath;
use bitnet_run::kernels::float::{self, DenseInput, DenseKind, DenseMatrix};
use bitnet_run::kernels::q4::{self as kq4, Q4Acts, Q4Tiles};
use proptest::prelude::*;

/// A `q4_b32` tensor from codes (0..=15, row-major) and per-block scales.
fn pack(rows: usize, cols: usize, codes: &[u8], scales: &[f32]) -> Vec<u8> {
    q4::encode(Q4Geometry { rows, cols }, scales, codes)
}

/// Up to 39 rows, 40 blocks and 11 tokens: partial passes of rows, up to two whole tiles of 16 rows
/// and a partial one, up to two whole superblocks and a partial one, and several register blocks
/// of tokens (4 on AVX2, 8 on AVX-512 and NEON) with a remainder.
fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<u8>, Vec<f32>, Vec<f32>)> {
    (1usize..40, 1usize..41, 1usize..12).prop_flat_map(|(rows, blocks, tokens)| {
        let cols = 32 * blocks;
        (
            Just(rows),
            Just(cols),
            Just(tokens),
            proptest::collection::vec(0u8..16, rows * cols),
            proptest::collection::vec(
                prop_oneof![Just(0.0f32), -2.0f32..2.0, -1e-3f32..1e-3],
                rows * blocks,
            ),
            proptest::collection::vec(-10.0f32..10.0, tokens * cols),
        )
    })
}

/// `Σ_c w[r][c] · a[t][c]` in f64, with `w` from the format crate's decoder and `a` the dequantized
/// activation codes, and the sum of the absolute terms (for a rounding tolerance).
fn oracle(w: &[f32], acts: &Q4Acts, cols: usize, r: usize, t: usize) -> (f64, f64) {
    let (q, scales) = (acts.row(t), acts.scales(t));
    (0..cols)
        .map(|c| w[r * cols + c] as f64 * q[c] as f64 * scales[c / 32] as f64)
        .fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()))
}

fn check(rows: usize, cols: usize, codes: &[u8], scales: &[f32], x: &[f32]) {
    let data = pack(rows, cols, codes, scales);
    let g = Q4Geometry { rows, cols };
    let w = q4::decode(g, &data).unwrap();
    let acts = Q4Acts::quantize(KernelPath::SCALAR, x, cols);
    let tokens = acts.tokens;
    let m = DenseMatrix {
        data: &data,
        rows,
        cols,
        kind: DenseKind::Q4B32,
    };
    for path in KernelPath::available() {
        let mut out = vec![0.0f32; rows * tokens];
        float::matmul(path, &m, &DenseInput::new(path, &m, x), 0..rows, &mut out);
        for r in 0..rows {
            for t in 0..tokens {
                let (exact, magnitude) = oracle(&w, &acts, cols, r, t);
                let got = out[r * tokens + t] as f64;
                assert!(
                    (got - exact).abs() <= 1e-5 * magnitude + 1e-30,
                    "{path:?} {rows}x{cols} row {r} token {t}: {got} vs {exact}"
                );
            }
        }
        // A row range that starts inside the matrix.
        if rows > 1 {
            let mut part = vec![0.0f32; (rows - 1) * tokens];
            float::matmul(path, &m, &DenseInput::new(path, &m, x), 1..rows, &mut part);
            assert_eq!(part, out[tokens..], "{path:?} rows 1..{rows}");
        }
        // The tile kernel gives the row kernel's values bit for bit, also from inside a tile.
        if let (Some(tiles), DenseInput::Q4(acts)) = (
            Q4Tiles::for_path(path, g, &data),
            DenseInput::new(path, &m, x),
        ) {
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for start in [0, rows / 2, rows - 1] {
                let mut tiled = vec![0.0f32; (rows - start) * tokens];
                kq4::matmul_tiles(path, &tiles, &acts, start..rows, &mut tiled);
                assert_eq!(
                    bits(&tiled),
                    bits(&out[start * tokens..]),
                    "{path:?} tiles, rows {start}..{rows}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn q4_products_equal_the_f64_oracle_on_every_path(
        (rows, cols, _tokens, codes, scales, x) in case()
    ) {
        check(rows, cols, &codes, &scales, &x);
    }

    #[test]
    fn activation_codes_are_within_half_a_step(x in proptest::collection::vec(-100.0f32..100.0, 96)) {
        let acts = Q4Acts::quantize(KernelPath::SCALAR, &x, 96);
        for (b, block) in x.chunks_exact(32).enumerate() {
            let s = acts.scales(0)[b];
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert!((s * 127.0 - max).abs() <= 1e-5 * max);
            for (c, v) in block.iter().enumerate() {
                let q = acts.row(0)[32 * b + c];
                prop_assert!((q as f32 * s - v).abs() <= 0.5001 * s, "col {}: {} vs {}", c, q, v);
            }
        }
    }
}

#[test]
fn real_output_shape_and_extreme_values_agree_on_every_path() {
    // 2B-4T's hidden size (20 whole groups) and a shape with a tail of three blocks; codes 0 and 15
    // with activations at ±127 are the largest products the kernels' integer sums meet.
    for (rows, cols) in [(9usize, 2560usize), (5, 224)] {
        let codes: Vec<u8> = (0..rows * cols)
            .map(|i| if i % 3 == 0 { 15 } else { (i * 7 % 16) as u8 })
            .collect();
        let scales: Vec<f32> = (0..rows * cols / 32)
            .map(|b| 0.01 + (b % 13) as f32 * 0.003)
            .collect();
        let x: Vec<f32> = (0..2 * cols)
            .map(|i| if i % 5 == 0 { -3.0 } else { 3.0 })
            .collect();
        check(rows, cols, &codes, &scales, &x);
        let zero_codes = vec![0u8; rows * cols];
        check(rows, cols, &zero_codes, &scales, &x);
    }
}

#[test]
fn q4_rows_decode_like_the_format_reference() {
    let (rows, cols) = (3usize, 96usize);
    let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 5 % 16) as u8).collect();
    let scales = [0.5f32, -0.25, 0.0, 1.5, 2.0, 0.125, 3.0, 0.75, 1.0];
    let data = pack(rows, cols, &codes, &scales);
    let all = q4::decode(Q4Geometry { rows, cols }, &data).unwrap();
    let m = DenseMatrix {
        data: &data,
        rows,
        cols,
        kind: DenseKind::Q4B32,
    };
    for path in KernelPath::available() {
        for r in 0..rows {
            let mut out = vec![0.0f32; cols];
            m.row_into(path, r, &mut out);
            assert_eq!(out, all[r * cols..(r + 1) * cols], "{path:?} row {r}");
        }
    }
}

#[test]
fn q4_products_stay_close_to_the_unquantized_activations() {
    // Per-block int8 activations: the product differs from the one with f32 activations by at most
    // half a step per element, summed.
    let (rows, cols) = (4usize, 256usize);
    let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 11 % 16) as u8).collect();
    let scales: Vec<f32> = (0..rows * cols / 32)
        .map(|b| 0.02 * (b + 1) as f32)
        .collect();
    let data = pack(rows, cols, &codes, &scales);
    let w = q4::decode(Q4Geometry { rows, cols }, &data).unwrap();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 29 % 61) as f32 - 30.0) / 7.0)
        .collect();
    let acts = Q4Acts::quantize(KernelPath::SCALAR, &x, cols);
    let m = DenseMatrix {
        data: &data,
        rows,
        cols,
        kind: DenseKind::Q4B32,
    };
    let mut out = vec![0.0f32; rows];
    float::matmul(
        KernelPath::detect(),
        &m,
        &DenseInput::new(KernelPath::detect(), &m, &x),
        0..rows,
        &mut out,
    );
    for (r, got) in out.iter().enumerate() {
        let exact: f64 = (0..cols)
            .map(|c| w[r * cols + c] as f64 * x[c] as f64)
            .sum();
        let bound: f64 = (0..cols)
            .map(|c| (w[r * cols + c] as f64).abs() * 0.5 * acts.scales(0)[c / 32] as f64)
            .sum();
        assert!(
            (*got as f64 - exact).abs() <= bound * 1.001 + 1e-6,
            "row {r}: {got} vs {exact} (bound {bound})"
        );
    }
}

#[test]
fn a_tokens_product_does_not_depend_on_the_tokens_beside_it() {
    // Every token count up to 11 takes each register block size (8 or 4, then 2 and 1) on every
    // path; each token's products must equal, bit for bit, those it gets alone (batched serving
    // relies on it: README, "Exactness").
    let (rows, cols) = (6usize, 2560 + 32);
    let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 11 % 16) as u8).collect();
    let scales: Vec<f32> = (0..rows * cols / 32)
        .map(|b| 0.01 + (b % 7) as f32 * 0.004)
        .collect();
    let data = pack(rows, cols, &codes, &scales);
    let m = DenseMatrix {
        data: &data,
        rows,
        cols,
        kind: DenseKind::Q4B32,
    };
    let x: Vec<f32> = (0..11 * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
        .collect();
    for path in KernelPath::available() {
        let alone: Vec<Vec<f32>> = x
            .chunks_exact(cols)
            .map(|xt| {
                let mut out = vec![0.0f32; rows];
                float::matmul(path, &m, &DenseInput::new(path, &m, xt), 0..rows, &mut out);
                out
            })
            .collect();
        for tokens in 1..=11 {
            let x = &x[..tokens * cols];
            let mut out = vec![0.0f32; rows * tokens];
            float::matmul(path, &m, &DenseInput::new(path, &m, x), 0..rows, &mut out);
            for r in 0..rows {
                for (t, alone) in alone.iter().enumerate().take(tokens) {
                    assert_eq!(
                        out[r * tokens + t].to_bits(),
                        alone[r].to_bits(),
                        "{path:?} {tokens} tokens, row {r} token {t}"
                    );
                }
            }
        }
    }
}
