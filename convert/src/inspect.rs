//! `bitnet-convert inspect`: a `.bitnet` file's header, model configuration, tokenizer, provenance,
//! the memory the model needs to run, and its tensor table, as text.

use std::fmt::Write;
use std::path::Path;

use bitnet_format::{BitnetFile, Encoding, FormatError, RopeScaling, Source, element_count};
use serde_json::Value;

use crate::summary::human_bytes;

/// Describe the file at `path`. Only the header is read (no checksums; see `verify`).
pub fn inspect(path: &Path) -> Result<String, FormatError> {
    let file = BitnetFile::open(path)?;
    Ok(describe(&file, path))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn describe(file: &BitnetFile, path: &Path) -> String {
    let h = file.header();
    let index = file.index();
    let m = &h.model;
    let mut s = String::new();
    let (major, minor) = file.version();
    let _ = writeln!(s, "file        {}", path.display());
    let _ = writeln!(
        s,
        "format      {major}.{minor}, {} bytes ({}), header {} bytes, data at offset {}",
        file.bytes().len(),
        human_bytes(file.bytes().len() as u64),
        index.preamble.header_len,
        index.data_start
    );
    let _ = writeln!(s, "\nmodel");
    let rope_scaling = match &m.rope_scaling {
        None => "none".to_string(),
        Some(RopeScaling::Linear { factor }) => format!("linear, factor {factor}"),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context_length,
        }) => format!(
            "llama3, factor {factor}, low {low_freq_factor}, high {high_freq_factor}, original context {original_context_length}"
        ),
    };
    for (k, v) in [
        ("family", m.family.clone()),
        ("hidden_size", m.hidden_size.to_string()),
        ("intermediate_size", m.intermediate_size.to_string()),
        ("num_layers", m.num_layers.to_string()),
        ("num_heads", m.num_heads.to_string()),
        ("num_kv_heads", m.num_kv_heads.to_string()),
        ("head_dim", m.head_dim.to_string()),
        ("vocab_size", m.vocab_size.to_string()),
        ("context_length", m.context_length.to_string()),
        ("rope_theta", m.rope_theta.to_string()),
        ("rope_scaling", rope_scaling),
        ("rms_norm_eps", format!("{:e}", m.rms_norm_eps)),
        ("activation", format!("{:?}", m.activation).to_lowercase()),
        ("sub_norms", yes_no(m.sub_norms).into()),
        ("tied_embeddings", yes_no(m.tied_embeddings).into()),
        ("attention_bias", yes_no(m.attention_bias).into()),
        ("qk_norm", yes_no(m.qk_norm).into()),
    ] {
        let _ = writeln!(s, "  {k:<18} {v}");
    }

    let _ = writeln!(s, "\ntokenizer");
    match &h.tokenizer {
        None => {
            let _ = writeln!(s, "  (none)");
        }
        Some(t) => {
            let json: Value = serde_json::from_str(t.tokenizer_json.get()).unwrap_or(Value::Null);
            let model = &json["model"];
            let kind = model["type"].as_str().unwrap_or("?");
            let vocab = match &model["vocab"] {
                Value::Object(o) => o.len(),
                Value::Array(a) => a.len(),
                _ => 0,
            };
            let added = json["added_tokens"].as_array().map_or(0, Vec::len);
            let opt = |v: Option<u32>| v.map_or("-".to_string(), |x| x.to_string());
            let _ = writeln!(
                s,
                "  {:<18} {kind}, {vocab} tokens + {added} added",
                "model"
            );
            let _ = writeln!(s, "  {:<18} {}", "bos_token_id", opt(t.bos_token_id));
            let _ = writeln!(s, "  {:<18} {:?}", "eos_token_ids", t.eos_token_ids);
            let _ = writeln!(s, "  {:<18} {}", "pad_token_id", opt(t.pad_token_id));
            let _ = writeln!(s, "  {:<18} {}", "add_bos_token", yes_no(t.add_bos_token));
            let template = match &t.chat_template {
                None => "none".to_string(),
                Some(c) => format!("{} characters", c.chars().count()),
            };
            let _ = writeln!(s, "  {:<18} {template}", "chat_template");
        }
    }

    let g = &h.generation;
    let mut generation = Vec::new();
    for (k, v) in [
        ("temperature", g.temperature.map(|v| v.to_string())),
        ("top_k", g.top_k.map(|v| v.to_string())),
        ("top_p", g.top_p.map(|v| v.to_string())),
        ("min_p", g.min_p.map(|v| v.to_string())),
        (
            "repetition_penalty",
            g.repetition_penalty.map(|v| v.to_string()),
        ),
        ("max_new_tokens", g.max_new_tokens.map(|v| v.to_string())),
    ] {
        if let Some(v) = v {
            generation.push(format!("{k} {v}"));
        }
    }
    let _ = writeln!(
        s,
        "\ngeneration  {}",
        if generation.is_empty() {
            "(no defaults)".to_string()
        } else {
            generation.join(", ")
        }
    );

    let p = &h.provenance;
    let _ = writeln!(s, "\nprovenance");
    let source = match &p.source {
        Source::HuggingFace { repo, revision } => {
            format!("Hugging Face {repo} at {revision}")
        }
        Source::Directory { path } => format!("directory {path}"),
        Source::Gguf { path } => format!("GGUF {path}"),
        Source::Synthetic { like, seed } => format!("synthetic, like {like}, seed {seed}"),
        Source::Other => "(a kind this reader does not know)".to_string(),
    };
    let _ = writeln!(s, "  {:<18} {source}", "source");
    let _ = writeln!(s, "  {:<18} {}", "converter", p.converter);
    let options: Vec<String> = p
        .options
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(text) => format!("{k}={text}"),
            None => format!("{k}={v}"),
        })
        .collect();
    let options = if options.is_empty() {
        "(none)".to_string()
    } else {
        options.join(", ")
    };
    let _ = writeln!(s, "  {:<18} {options}", "options");
    for f in &p.files {
        let _ = writeln!(
            s,
            "  {:<18} {} ({} bytes) sha256 {}",
            "file", f.name, f.bytes, f.sha256
        );
    }

    let tensors = file.tensors();
    let total: u64 = tensors.iter().map(|t| t.length).sum();
    memory(&mut s, file, total);
    let _ = writeln!(
        s,
        "\ntensors     {} tensors, {} bytes ({})",
        tensors.len(),
        total,
        human_bytes(total)
    );
    let rows: Vec<[String; 5]> = tensors
        .iter()
        .map(|t| {
            let (encoding, layout) = match t.encoding.label().split_once('/') {
                Some((e, l)) => (e.to_string(), l.to_string()),
                None => (t.encoding.label(), "-".to_string()),
            };
            let shape = format!(
                "[{}]",
                t.shape
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            [
                t.name.clone(),
                encoding,
                layout,
                shape,
                t.length.to_string(),
            ]
        })
        .collect();
    let headings = ["name", "encoding", "layout", "shape", "bytes"];
    let mut widths = headings.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        )
    };
    let _ = writeln!(s, "{}", line(headings));
    for r in &rows {
        let _ = writeln!(s, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    s
}

/// The "memory" section: bits per ternary weight, and what running the model takes: its tensors as
/// stored (`total` bytes, as a runtime maps them) plus the KV cache, per position and for the
/// model's whole context, in f16 (bitnet-run's default) and f32.
fn memory(s: &mut String, file: &BitnetFile, total: u64) {
    let (mut ternary_bytes, mut ternary_weights) = (0u64, 0u64);
    for t in file.tensors() {
        if let Encoding::Ternary(_) = t.encoding {
            ternary_bytes += t.length;
            ternary_weights += element_count(&t.shape).unwrap_or(0);
        }
    }
    let m = &file.header().model;
    let _ = writeln!(
        s,
        "\nmemory      to run: the tensors as stored (mapped) + the KV cache of one sequence"
    );
    if ternary_weights > 0 {
        let _ = writeln!(
            s,
            "  {:<18} {:.3} bits per weight ({ternary_bytes} bytes, {ternary_weights} weights)",
            "ternary",
            ternary_bytes as f64 * 8.0 / ternary_weights as f64
        );
    } else {
        let _ = writeln!(s, "  {:<18} (no ternary tensors)", "ternary");
    }
    let _ = writeln!(
        s,
        "  {:<18} {total} bytes ({})",
        "tensors",
        human_bytes(total)
    );
    // A key and a value per element, 2 or 4 bytes each.
    let [f16, f32] = [2, 4].map(|b| m.kv_elements_per_position().saturating_mul(2 * b));
    let _ = writeln!(
        s,
        "  {:<18} f16 {f16} bytes ({}), f32 {f32} bytes ({})",
        "kv cache/token",
        human_bytes(f16),
        human_bytes(f32)
    );
    let ctx = m.context_length as u64;
    let [f16, f32] = [f16, f32].map(|kv| total.saturating_add(kv.saturating_mul(ctx)));
    let _ = writeln!(
        s,
        "  {:<18} f16 {f16} bytes ({}), f32 {f32} bytes ({})",
        format!("total at ctx {ctx}"),
        human_bytes(f16),
        human_bytes(f32)
    );
}
