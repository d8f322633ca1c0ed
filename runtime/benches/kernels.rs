//! Kernel micro-benchmarks on the real shapes of BitNet b1.58 2B-4T: the ternary matrix-vector
//! (generation) and matrix-matrix (prompt, 128 tokens) kernels of every tiled layout and path this
//! CPU has, the dense output-matrix row kernels (f16, bf16, i8_row, q4_b32), and attention over an
//! f16 KV cache at depth 2048 (every layer's and KV head's keys and values, 157 MB, more than the
//! caches hold, as one generated token reads them). Single-threaded: these measure the kernels,
//! `bitnet-run bench` measures the model.
//!
//! `cargo bench -p bitnet-run --bench kernels` (add `-- ternary/1` etc. to filter). Throughput is
//! weight bytes per second for one token, multiply-accumulates per second for 128 tokens, and cache
//! bytes per second for attention.

use std::hint::black_box;
use std::time::Duration;

use bitnet_format::q4::Q4Geometry;
use bitnet_format::{TernaryLayout, ternary};
use bitnet_run::kernels::activation::QuantizedActs;
use bitnet_run::kernels::aligned::LineAligned;
use bitnet_run::kernels::attention::{self, CacheRows};
use bitnet_run::kernels::float::{self, DenseInput, DenseKind, DenseMatrix, FloatKind};
use bitnet_run::kernels::q4::{self, Q4Tiles};
use bitnet_run::kernels::{KernelPath, Packing, TernaryMatrix, ternary_matmul};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// (name, rows, cols) of the 2B-4T projections.
const SHAPES: [(&str, usize, usize); 4] = [
    ("attn_q/o 2560x2560", 2560, 2560),
    ("attn_k/v 640x2560", 640, 2560),
    ("ffn_gate/up 6912x2560", 6912, 2560),
    ("ffn_down 2560x6912", 2560, 6912),
];

fn values(n: usize, seed: u64) -> Vec<i8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 3) as i8 - 1
        })
        .collect()
}

fn ternary_kernels(c: &mut Criterion) {
    let paths = KernelPath::available();
    for tokens in [1usize, 2, 8, 128] {
        let mut group = c.benchmark_group(format!("ternary/{tokens}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(300));
        for (name, rows, cols) in SHAPES {
            let vals = values(rows * cols, rows as u64 * 31 + cols as u64);
            let acts: Vec<f32> = values(tokens * cols, 99)
                .iter()
                .map(|&v| v as f32 * 0.7 + 0.1)
                .collect();
            for layout in [
                TernaryLayout::Tiled { tile_rows: 4 },
                TernaryLayout::Tiled { tile_rows: 16 },
                TernaryLayout::Base3 { tile_rows: 4 },
                TernaryLayout::Base3 { tile_rows: 16 },
            ] {
                let (packing, tile_rows) = Packing::of(layout).unwrap();
                let packed = ternary::pack(layout, rows as u64, cols as u64, &vals, 1.0).unwrap();
                let w = TernaryMatrix {
                    codes: &packed[64..],
                    rows,
                    cols,
                    tile_rows,
                    packing,
                    scale: 1.0,
                };
                let mut x = QuantizedActs::default();
                x.quantize(KernelPath::SCALAR, &acts, cols, w.kpad());
                let mut out = vec![0i32; w.tiles() * tokens * w.tile_rows];
                group.throughput(if tokens == 1 {
                    Throughput::Bytes(w.codes.len() as u64)
                } else {
                    Throughput::Elements((rows * cols * tokens) as u64)
                });
                for &path in paths.iter().filter(|p| p.reads_layout(layout)) {
                    // The scalar path is the reference, far too slow for 128-token products.
                    if path == KernelPath::SCALAR && tokens > 1 {
                        continue;
                    }
                    let id = BenchmarkId::new(format!("{}/{}", path.name(), layout.label()), name);
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            ternary_matmul(
                                path,
                                black_box(&w),
                                black_box(&x),
                                0..w.tiles(),
                                &mut out,
                            )
                        })
                    });
                }
            }
        }
        group.finish();
    }
}

fn dense_rows(c: &mut Criterion) {
    // 8192 rows of the 2B-4T output matrix (hidden 2560), one token: the generation case (and
    // 2, 4 and 8 tokens for f16 and q4_b32, batched steps).
    let (rows, cols) = (8192usize, 2560usize);
    let mut group = c.benchmark_group("output");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    let x: Vec<f32> = (0..cols).map(|i| (i % 7) as f32 * 0.1).collect();
    let x8: Vec<f32> = (0..8 * cols).map(|i| (i % 11) as f32 * 0.1).collect();
    for kind in [
        DenseKind::Float(FloatKind::F16),
        DenseKind::Float(FloatKind::Bf16),
        DenseKind::I8Row,
        DenseKind::Q4B32,
    ] {
        let data: Vec<u8> = match kind {
            DenseKind::I8Row => {
                let mut d = vec![0u8; (rows * 4).next_multiple_of(64)];
                d.extend((0..rows * cols).map(|i| (i % 251) as u8));
                d
            }
            DenseKind::Q4B32 => {
                let g = Q4Geometry { rows, cols };
                let mut d = vec![0u8; g.byte_len()];
                for (b, s) in d[..rows * cols / 16].chunks_exact_mut(2).enumerate() {
                    s.copy_from_slice(&half::f16::from_f32((b % 5) as f32 * 0.01).to_le_bytes());
                }
                let codes = g.codes_offset();
                d[codes..]
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = (i % 251) as u8);
                d
            }
            _ => (0..rows * cols)
                .flat_map(|i| half::f16::from_f32((i % 13) as f32 * 0.01).to_le_bytes())
                .collect(),
        };
        // On a cache line, as a model's tensors are (the format aligns them to 64 bytes, and the
        // weights lie page-aligned in memory).
        let storage = LineAligned::copy_of(&data);
        let data = storage.as_slice();
        let w = DenseMatrix {
            data,
            rows,
            cols,
            kind,
        };
        let mut out = vec![0.0f32; rows];
        group.throughput(Throughput::Bytes(data.len() as u64));
        for path in KernelPath::available() {
            let input = DenseInput::new(path, &w, &x);
            let label = match kind {
                DenseKind::Float(k) => format!("{k:?}").to_lowercase(),
                DenseKind::I8Row => "i8_row".into(),
                DenseKind::Q4B32 => "q4_b32".into(),
            };
            group.bench_function(BenchmarkId::new(path.name(), &label), |b| {
                b.iter(|| float::matmul(path, black_box(&w), black_box(&input), 0..rows, &mut out))
            });
            // Several tokens at once, as a batched serving step with that many sequences
            // generating.
            if !matches!(kind, DenseKind::Float(FloatKind::F16) | DenseKind::Q4B32) {
                continue;
            }
            for n in [2, 4, 8] {
                let input_n = DenseInput::new(path, &w, &x8[..n * cols]);
                let mut out_n = vec![0.0f32; rows * n];
                let id = BenchmarkId::new(path.name(), format!("{label} x{n}"));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        float::matmul(
                            path,
                            black_box(&w),
                            black_box(&input_n),
                            0..rows,
                            &mut out_n,
                        )
                    })
                });
                // The same from the tiles a batched step reads, where the path has them.
                let tiles = match (&input_n, kind) {
                    (DenseInput::Q4(acts), DenseKind::Q4B32) => {
                        Q4Tiles::for_path(path, Q4Geometry { rows, cols }, data).map(|t| (t, acts))
                    }
                    _ => None,
                };
                if let Some((tiles, acts)) = tiles {
                    let id = BenchmarkId::new(path.name(), format!("{label} tiles x{n}"));
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            q4::matmul_tiles(path, black_box(&tiles), acts, 0..rows, &mut out_n)
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

fn attention_at_depth(c: &mut Criterion) {
    // The 2B-4T shape: 30 layers × 5 KV heads of 128 values, 4 query heads per KV head.
    let (heads, depth, dim, group) = (30 * 5, 2048usize, 128usize, 4usize);
    let cache = |seed: usize| -> Vec<Vec<u8>> {
        (0..heads)
            .map(|h| {
                (0..depth * dim)
                    .flat_map(|i| {
                        let v = ((i * 7 + h * 13 + seed) % 29) as f32 * 0.02 - 0.28;
                        half::f16::from_f32(v).to_le_bytes()
                    })
                    .collect()
            })
            .collect()
    };
    let (keys, values) = (cache(1), cache(2));
    fn rows(data: &[u8], dim: usize, depth: usize) -> CacheRows<'_> {
        CacheRows {
            data,
            kind: FloatKind::F16,
            stride: dim * 2,
            dim,
            rows: depth,
        }
    }
    let q: Vec<f32> = (0..group * dim).map(|i| (i % 11) as f32 * 0.05).collect();
    let mut scores = vec![0.0f32; group * depth];
    let mut out = vec![0.0f32; group * dim];
    let mut g = c.benchmark_group("attention/2048");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Bytes((2 * heads * depth * dim * 2) as u64));
    for path in KernelPath::available() {
        g.bench_function(BenchmarkId::new(path.name(), "f16"), |b| {
            b.iter(|| {
                for (k, v) in keys.iter().zip(&values) {
                    attention::scores(path, &q, rows(k, dim, depth), 0.088, &mut scores);
                    attention::softmax_rows(path, &mut scores, depth);
                    attention::accumulate(path, &scores, rows(v, dim, depth), &mut out);
                }
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ternary_kernels, dense_rows, attention_at_depth);
criterion_main!(benches);
