//! Reference packing against hand-derived bytes (SPEC.md's worked examples), and round-trip properties.

use bitnet_format::TernaryLayout;
use bitnet_format::ternary::{self, TernaryError};
use proptest::prelude::*;

const ALL_LAYOUTS: [TernaryLayout; 10] = [
    TernaryLayout::I2s { block: 128 },
    TernaryLayout::I2s { block: 64 },
    TernaryLayout::Tiled { tile_rows: 4 },
    TernaryLayout::Tiled { tile_rows: 8 },
    TernaryLayout::Tiled { tile_rows: 16 },
    TernaryLayout::Tiled { tile_rows: 32 },
    TernaryLayout::Base3 { tile_rows: 4 },
    TernaryLayout::Base3 { tile_rows: 8 },
    TernaryLayout::Base3 { tile_rows: 16 },
    TernaryLayout::Base3 { tile_rows: 32 },
];

#[test]
fn i2s128_worked_example() {
    // SPEC.md §6.2: one row of 128; elements 0, 32, 64, 96 = +1, -1, 0, +1; all others 0.
    let mut w = vec![0i8; 128];
    (w[0], w[32], w[64], w[96]) = (1, -1, 0, 1);
    let bytes = ternary::pack(TernaryLayout::I2s { block: 128 }, 1, 128, &w, 0.25).unwrap();
    assert_eq!(bytes.len(), 32 + 32);
    assert_eq!(bytes[0], 0b10_00_01_10);
    assert!(bytes[1..32].iter().all(|&b| b == 0x55));
    assert_eq!(bytes[32..36], 0.25f32.to_le_bytes());
    assert!(bytes[36..].iter().all(|&b| b == 0));
}

#[test]
fn i2s_padding_when_elements_are_not_a_multiple_of_the_block() {
    // 3 × 30 = 90 elements: one 128-block; elements 90..128 are padding (code 1).
    let w: Vec<i8> = (0..90).map(|i| [-1, 0, 1][i % 3]).collect();
    let layout = TernaryLayout::I2s { block: 128 };
    let bytes = ternary::pack(layout, 3, 30, &w, 1.0).unwrap();
    assert_eq!(bytes.len(), 32 + 32);
    // byte 31 holds elements 31, 63, 95, 127: codes of w[31]=0 -> 1, w[63]=-1 -> 0, then two pads (1).
    assert_eq!(bytes[31], 0b01_00_01_01);
    assert_eq!(ternary::unpack(layout, 3, 30, &bytes).unwrap().0, w);
}

#[test]
fn tiled4_worked_example() {
    // SPEC.md §6.3: 4 × 16, row 1 col 5 = -1, row 2 col 15 = +1, all else 0.
    let mut w = vec![0i8; 64];
    w[16 + 5] = -1;
    w[2 * 16 + 15] = 1;
    let bytes = ternary::pack(TernaryLayout::Tiled { tile_rows: 4 }, 4, 16, &w, 2.0).unwrap();
    assert_eq!(bytes.len(), 64 + 16);
    assert_eq!(bytes[0..4], 2.0f32.to_le_bytes());
    assert!(bytes[4..64].iter().all(|&b| b == 0));
    let mut expected = [0x55u8; 16];
    expected[4 + 1] = 0x51; // row 1, lane byte 1 (col 5 % 4), bit pair 1 (col 5 / 4) -> code 0
    expected[8 + 3] = 0x95; // row 2, lane byte 3 (col 15 % 4), bit pair 3 (col 15 / 4) -> code 2
    assert_eq!(bytes[64..], expected);
}

#[test]
fn base3x4_worked_example() {
    // SPEC.md §6.4: 4 × 20, row 1 col 5 = -1, row 2 col 19 = +1, all else 0.
    let mut w = vec![0i8; 80];
    w[20 + 5] = -1;
    w[2 * 20 + 19] = 1;
    let bytes = ternary::pack(TernaryLayout::Base3 { tile_rows: 4 }, 4, 20, &w, 2.0).unwrap();
    assert_eq!(bytes.len(), 64 + 16);
    assert_eq!(bytes[0..4], 2.0f32.to_le_bytes());
    assert!(bytes[4..64].iter().all(|&b| b == 0));
    let mut expected = [0x80u8; 16];
    expected[4 + 1] = 0x64; // row 1, lane byte 1, digit 1 -> code 0: codes 1 0 1 1 1
    expected[8 + 3] = 0x81; // row 2, lane byte 3, digit 4 -> code 2: codes 1 1 1 1 2
    assert_eq!(bytes[64..], expected);
}

/// The 243 code bytes, computed here from the definition with exact rationals: the least integer
/// `b` with `243 · b ≥ 256 · v`, independent of the crate's formula.
fn base3_bytes() -> Vec<([u8; 5], u8)> {
    (0..243u32)
        .map(|v| {
            let digits = [v / 81, v / 27 % 3, v / 9 % 3, v / 3 % 3, v % 3].map(|d| d as u8);
            let b = (0..=255u32).find(|b| 243 * b >= 256 * v).unwrap();
            (digits, b as u8)
        })
        .collect()
}

#[test]
fn base3_every_code_byte_decodes_to_its_digits_and_no_other_byte_is_valid() {
    let table = base3_bytes();
    for (digits, b) in &table {
        assert_eq!(ternary::base3_encode(*digits), *b);
        let back: Vec<u8> = (0..5).map(|p| ternary::base3_digit(*b, p)).collect();
        assert_eq!(back, digits, "byte {b:#04x}");
        // The iterative form of SPEC.md §6.4: threshold, then multiply by 3 modulo 256.
        let mut x = *b as u32;
        for (p, &d) in digits.iter().enumerate() {
            let digit = if x < 86 {
                0
            } else if x < 171 {
                1
            } else {
                2
            };
            assert_eq!(digit, d, "byte {b:#04x} digit {p}");
            x = 3 * x % 256;
        }
    }
    let valid: Vec<u8> = table.iter().map(|(_, b)| *b).collect();
    for b in 0..=255u8 {
        assert_eq!(ternary::base3_valid(b), valid.contains(&b), "byte {b:#04x}");
    }
    assert_eq!(
        (0..=255u8).filter(|&b| ternary::base3_valid(b)).count(),
        243
    );
}

#[test]
fn base3_rejects_a_byte_that_is_not_a_code_byte_and_bad_padding() {
    let layout = TernaryLayout::Base3 { tile_rows: 4 };
    let good = ternary::pack(layout, 5, 23, &[0; 115], 1.0).unwrap();
    let invalid = (0..=255u8).find(|&b| !ternary::base3_valid(b)).unwrap();
    let mut bad = good.clone();
    bad[70] = invalid;
    assert_eq!(
        ternary::unpack(layout, 5, 23, &bad),
        Err(TernaryError::NotBase3 {
            offset: 70,
            value: invalid
        })
    );
    // Block 1 of tile 0 holds columns 20..23 in digit 0 of lane bytes 0..2; lane byte 3 is padding.
    let mut bad = good.clone();
    bad[64 + 16 + 3] = ternary::base3_encode([2, 1, 1, 1, 1]);
    assert_eq!(
        ternary::unpack(layout, 5, 23, &bad),
        Err(TernaryError::BadPadding { code: 2 })
    );
}

#[test]
fn tiled_padding_rows_and_columns() {
    // 5 × 17 in 4-row tiles: 2 tiles × 2 column blocks of 16 bytes each.
    let layout = TernaryLayout::Tiled { tile_rows: 4 };
    let w = vec![1i8; 5 * 17];
    let bytes = ternary::pack(layout, 5, 17, &w, 1.0).unwrap();
    assert_eq!(bytes.len(), 64 + 2 * 2 * 16);
    // Tile 0, block 1 holds column 16 only: lane byte 0 of each row, bit pair 0 -> code 2, rest pad.
    assert_eq!(
        bytes[64 + 16..64 + 32],
        [0x56, 0x55, 0x55, 0x55].repeat(4)[..]
    );
    // Tile 1 (row 4 real, rows 5..8 padding), block 0: row 4 all +1, other rows pad.
    let block = &bytes[64 + 32..64 + 48];
    assert_eq!(block[..4], [0xAA; 4]);
    assert!(block[4..].iter().all(|&b| b == 0x55));
}

#[test]
fn unpack_rejects_code_3_bad_padding_reserved_bytes_and_bad_scale() {
    let layout = TernaryLayout::Tiled { tile_rows: 4 };
    let good = ternary::pack(layout, 5, 17, &[0; 85], 1.0).unwrap();
    let mut bad = good.clone();
    bad[64] = 0x57;
    assert_eq!(
        ternary::unpack(layout, 5, 17, &bad),
        Err(TernaryError::InvalidCode { row: 0, col: 0 })
    );
    let mut bad = good.clone();
    bad[64 + 16] = 0x95; // column 16+12 of row 0 is padding
    assert_eq!(
        ternary::unpack(layout, 5, 17, &bad),
        Err(TernaryError::BadPadding { code: 2 })
    );
    let mut bad = good.clone();
    bad[10] = 1;
    assert_eq!(
        ternary::unpack(layout, 5, 17, &bad),
        Err(TernaryError::ReservedNotZero {
            offset: 10,
            value: 1
        })
    );
    let mut bad = good.clone();
    bad[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        ternary::unpack(layout, 5, 17, &bad),
        Err(TernaryError::BadScale { .. })
    ));
    assert!(matches!(
        ternary::unpack(layout, 5, 17, &good[1..]),
        Err(TernaryError::DataLength { .. })
    ));
}

#[test]
fn pack_rejects_non_ternary_values_and_wrong_counts() {
    let layout = TernaryLayout::DEFAULT;
    assert_eq!(
        ternary::pack(layout, 2, 2, &[0, 1, 2, 0], 1.0),
        Err(TernaryError::NotTernary {
            row: 1,
            col: 0,
            value: 2
        })
    );
    assert!(matches!(
        ternary::pack(layout, 2, 2, &[0; 3], 1.0),
        Err(TernaryError::ValueCount { .. })
    ));
    assert!(matches!(
        ternary::pack(layout, 2, 2, &[0; 4], f32::INFINITY),
        Err(TernaryError::BadScale { .. })
    ));
}

#[test]
fn every_layout_places_every_element_in_a_distinct_slot() {
    for layout in ALL_LAYOUTS {
        let (rows, cols) = (37u64, 45u64);
        let mut seen = std::collections::HashSet::new();
        for r in 0..rows {
            for c in 0..cols {
                let (byte, slot) = ternary::code_position(layout, cols, r, c);
                assert!(byte < layout.byte_len(rows, cols).unwrap());
                assert!(slot < ternary::codes_per_byte(layout));
                assert!(
                    seen.insert((byte, slot)),
                    "{layout:?} reuses a slot at ({r}, {c})"
                );
            }
        }
    }
}

fn matrix() -> impl Strategy<Value = (u64, u64, Vec<i8>)> {
    (1u64..70, 1u64..300).prop_flat_map(|(rows, cols)| {
        proptest::collection::vec(-1i8..=1, (rows * cols) as usize)
            .prop_map(move |v| (rows, cols, v))
    })
}

proptest! {
    #[test]
    fn pack_unpack_round_trip((rows, cols, values) in matrix(), scale in 1e-6f32..10.0, which in 0usize..ALL_LAYOUTS.len()) {
        let layout = ALL_LAYOUTS[which];
        let bytes = ternary::pack(layout, rows, cols, &values, scale).unwrap();
        prop_assert_eq!(bytes.len() as u64, layout.byte_len(rows, cols).unwrap());
        let (back, s) = ternary::unpack(layout, rows, cols, &bytes).unwrap();
        prop_assert_eq!(back, values);
        prop_assert_eq!(s.to_bits(), scale.to_bits());
    }
}
