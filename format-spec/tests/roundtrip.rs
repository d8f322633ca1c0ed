//! Whole files: write → read round trips, determinism, and the golden files every version must read.

mod common;

use bitnet_format::{BitnetFile, Encoding, FileWriter, TensorSpec, TernaryLayout, ternary};
use common::header;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Payload {
    Floats(Encoding, Vec<u64>, Vec<f32>),
    Ternary(TernaryLayout, u64, u64, Vec<i8>, f32),
}

fn encode_floats(encoding: Encoding, values: &[f32]) -> Vec<u8> {
    match encoding {
        Encoding::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Encoding::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Encoding::Bf16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    }
}

fn payload() -> impl Strategy<Value = Payload> {
    let floats =
        (0usize..3, proptest::collection::vec(1u64..9, 1..3)).prop_flat_map(|(e, shape)| {
            let n = shape.iter().product::<u64>() as usize;
            let enc = [Encoding::F32, Encoding::F16, Encoding::Bf16][e];
            // Values exactly representable in every float encoding, so decoding must give them back.
            proptest::collection::vec((-64i32..64).prop_map(|v| v as f32 / 4.0), n)
                .prop_map(move |v| Payload::Floats(enc, shape.clone(), v))
        });
    let layouts = prop_oneof![
        Just(TernaryLayout::I2s { block: 128 }),
        Just(TernaryLayout::I2s { block: 64 }),
        Just(TernaryLayout::Tiled { tile_rows: 4 }),
        Just(TernaryLayout::Tiled { tile_rows: 16 }),
    ];
    let tern = (layouts, 1u64..40, 1u64..90, 0.01f32..4.0).prop_flat_map(|(l, r, c, s)| {
        proptest::collection::vec(-1i8..=1, (r * c) as usize)
            .prop_map(move |v| Payload::Ternary(l, r, c, v, s))
    });
    prop_oneof![floats, tern]
}

fn write_file(path: &std::path::Path, payloads: &[Payload]) {
    let specs: Vec<TensorSpec> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Payload::Floats(e, shape, _) => TensorSpec::new(format!("t{i}"), *e, shape),
            Payload::Ternary(l, r, c, _, _) => {
                TensorSpec::new(format!("t{i}"), Encoding::Ternary(*l), &[*r, *c])
            }
        })
        .collect();
    let w = FileWriter::create(path, header(), &specs).unwrap();
    // Written in reverse order: the writer takes tensors in any order.
    for (i, p) in payloads.iter().enumerate().rev() {
        let bytes = match p {
            Payload::Floats(e, _, v) => encode_floats(*e, v),
            Payload::Ternary(l, r, c, v, s) => ternary::pack(*l, *r, *c, v, *s).unwrap(),
        };
        w.write_tensor(&format!("t{i}"), &bytes).unwrap();
    }
    w.finish().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn write_read_round_trip(payloads in proptest::collection::vec(payload(), 0..6)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bitnet");
        write_file(&path, &payloads);
        let file = BitnetFile::open(&path).unwrap();
        file.check_contents().unwrap();
        prop_assert_eq!(file.tensors().len(), payloads.len());
        for (i, p) in payloads.iter().enumerate() {
            let view = file.tensor(&format!("t{i}")).unwrap();
            prop_assert_eq!(view.info.offset % 64, 0);
            match p {
                Payload::Floats(_, _, v) => prop_assert_eq!(&view.to_f32().unwrap(), v),
                Payload::Ternary(_, _, _, v, s) => {
                    let (back, scale) = view.unpack_ternary().unwrap();
                    prop_assert_eq!(&back, v);
                    prop_assert_eq!(scale.to_bits(), s.to_bits());
                }
            }
        }
        // Same input, byte-identical output.
        let again = dir.path().join("again.bitnet");
        write_file(&again, &payloads);
        prop_assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
    }
}
