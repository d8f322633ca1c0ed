//! bitnet-run against transformers: every family fixture is converted, then run on every kernel path
//! this CPU has, and compared with the float32 logits transformers produced (tools/fixtures).

mod convert_support;

use std::path::Path;

use bitnet_format::BitnetFile;
use bitnet_run::chat::{ChatTemplate, Message};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{KvType, KvTypes, Logits, Model, Session};
use bitnet_run::sampling::argmax;
use bitnet_run::tokenizer::Tokenizer;
use convert_support::*;

/// Transformers keeps its cache in f32: the comparison with it uses the f32 cache.
const F32_CACHE: KvTypes = KvTypes {
    keys: KvType::F32,
    values: KvType::F32,
};

fn converted(dir: &Path, name: &str) -> std::path::PathBuf {
    let out = dir.join(format!("{name}.bitnet"));
    convert_dir(&fixture(name), &out);
    out
}

#[test]
fn logits_match_transformers_for_every_family_and_kernel_path() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let file = converted(dir.path(), name);
        let reference = read_json(&fixture(name).join("reference.json"));
        for path in KernelPath::available() {
            let model = Model::load(BitnetFile::open(&file).unwrap(), path, 2).unwrap();
            let vocab = model.config.vocab_size as usize;
            for seq in reference["sequences"].as_array().unwrap() {
                let tokens = ids(&seq["token_ids"]);
                let (shape, want) =
                    read_npy(&fixture(name).join(seq["logits_file"].as_str().unwrap()));
                assert_eq!(shape, [tokens.len(), vocab]);
                let got = Session::new(&model, tokens.len(), F32_CACHE)
                    .forward(&tokens, Logits::All)
                    .unwrap();
                let label = format!("{name} {:?} {} tokens, {path:?}", seq["name"], tokens.len());
                assert_logits_like_transformers(&got, &want, vocab, &label);
            }
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let file = converted(dir.path(), "bitnet-2b4t");
    let greedy = &read_json(&fixture("bitnet-2b4t").join("reference.json"))["greedy_generation"];
    let prompt = ids(&greedy["prompt_token_ids"]);
    let expected = ids(&greedy["generated_token_ids"]);
    for path in KernelPath::available() {
        let model = Model::load(BitnetFile::open(&file).unwrap(), path, 2).unwrap();
        let mut session = Session::new(&model, 64, F32_CACHE);
        let mut logits = session.forward(&prompt, Logits::Last).unwrap();
        let mut generated = Vec::new();
        while generated.len() < expected.len() {
            let id = argmax(&logits);
            generated.push(id);
            logits = session.forward(&[id], Logits::Last).unwrap();
        }
        assert_eq!(generated, expected, "{path:?}");
    }
}

#[test]
fn tokenizers_encode_and_decode_like_transformers() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let file = BitnetFile::open(converted(dir.path(), name)).unwrap();
        let tok = Tokenizer::from_info(file.header().tokenizer.as_ref()).unwrap();
        let example = &read_json(&fixture(name).join("reference.json"))["tokenizer_example"];
        let text = example["text"].as_str().unwrap();
        let with_special = ids(&example["ids_with_special_tokens"]);
        assert_eq!(tok.encode_prompt(text).unwrap(), with_special, "{name}");
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&example["ids_without_special_tokens"]),
            "{name}"
        );
        let skip = example["decoded_skip_special"].as_str().unwrap();
        let body: Vec<u32> = with_special
            .iter()
            .copied()
            .filter(|id| Some(*id) != tok.bos())
            .collect();
        assert_eq!(tok.decode(&body).unwrap(), skip, "{name}");
    }
}

#[test]
fn chat_templates_render_like_apply_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for name in FIXTURES {
        let chat_path = fixture(name).join("chat.json");
        if !chat_path.exists() {
            continue;
        }
        let chat = read_json(&chat_path);
        let file = BitnetFile::open(converted(dir.path(), name)).unwrap();
        let info = file.header().tokenizer.as_ref().unwrap();
        let tok = Tokenizer::from_info(Some(info)).unwrap();
        let text = |id: Option<u32>| id.and_then(|id| tok.token_text(id)).unwrap_or_default();
        let template = ChatTemplate::new(
            info.chat_template.as_deref().unwrap(),
            &text(tok.bos()),
            &text(tok.eos().first().copied()),
        )
        .unwrap();
        let messages: Vec<Message> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let rendered = template
            .render(&messages, chat["add_generation_prompt"].as_bool().unwrap())
            .unwrap();
        assert_eq!(rendered, chat["rendered"].as_str().unwrap(), "{name}");
        assert_eq!(
            tok.encode(&rendered, false).unwrap(),
            ids(&chat["token_ids"]),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 8, "every chat family has a chat.json");
}

#[test]
fn demo_model_logits_match_transformers_on_held_out_text() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo");
    let file = dir.path().join("demo.bitnet");
    convert_dir(&demo, &file);
    let reference = &read_json(&demo.join("reference.json"))["heldout_logits"];
    let tokens = ids(&reference["token_ids"]);
    let (shape, want) = read_npy(&demo.join(reference["file"].as_str().unwrap()));
    for path in KernelPath::available() {
        let model = Model::load(BitnetFile::open(&file).unwrap(), path, 2).unwrap();
        let vocab = model.config.vocab_size as usize;
        assert_eq!(shape, [tokens.len(), vocab]);
        let got = Session::new(&model, tokens.len(), F32_CACHE)
            .forward(&tokens, Logits::All)
            .unwrap();
        // Transformers and the integer-exact numerics agree to ~1e-5 until an activation code
        // first rounds the other way (position 6 here); after that, by agreement rate.
        let row_max = |t: usize| {
            (t * vocab..(t + 1) * vocab)
                .map(|i| (got[i] as f64 - want[i]).abs())
                .fold(0.0, f64::max)
        };
        for t in 0..6 {
            assert!(row_max(t) < 1e-3, "{path:?} position {t}: {}", row_max(t));
        }
        let mean = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .sum::<f64>()
            / got.len() as f64;
        let agree = argmax_agreement(&got, &want, vocab);
        assert!(
            agree >= 0.9 && mean < 1e-2,
            "{path:?}: argmax agreement {agree}, mean |Δ| {mean}"
        );
    }
}
