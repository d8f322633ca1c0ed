//! Whether a model fits in memory, decided from the file's tensor table before anything is loaded.
//!
//! A model mapped from a file larger than the memory available still "loads" (the map is lazy), but
//! every token then reads the weights from disk again: generation slows from tokens per second to
//! minutes per token and the whole machine thrashes. So `bitnet-run` and `bitnet-serve` compare what
//! the model needs with what the system has before loading, and refuse (or warn when it is close).

use bitnet_format::{BitnetFile, Encoding, names};

use super::KvTypes;
use super::weights;
use crate::kernels::KernelPath;
use crate::kernels::q4::Q4Tiles;

/// Environment variable that replaces `MemAvailable` (in bytes); for tests, which need a machine of
/// a known size.
pub const AVAILABLE_ENV: &str = "BITNET_MEM_AVAILABLE";

/// Within this fraction of the available memory, a model that fits gets a warning.
const TIGHT: f64 = 0.9;

/// The way out when the tensors alone do not fit, where a smaller KV cache cannot help.
const TENSORS_DO_NOT_FIT: &str = "its tensors alone do not fit: in a 2-bit layout, convert it with `bitnet-convert --layout compact` (1.6 bits per weight)";

const GIB: f64 = (1u64 << 30) as f64;

/// The memory a model needs to run: its tensors as the runtime binds them, and the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// Bytes of tensors used in place from the mapped file (every page is read at each token).
    pub mapped: u64,
    /// Bytes of ternary tensors repacked at load into memory of their own, for kernels that do
    /// not read their layout (their file pages are read once, then only cached).
    pub repacked: u64,
    /// How many tensors are repacked.
    pub repacked_tensors: usize,
    /// Bytes of the copy of a `q4_b32` output matrix rearranged for products of several tokens
    /// at once ([`Q4Tiles`]), on a path that has such a kernel: counted only with at least as
    /// many slots as the tokens from which the path uses it ([`Q4Tiles::min_tokens`],
    /// [`MemoryNeed::with_slots`]). One sequence makes it only to take the logits of every
    /// position of a prompt (`perplexity`, `logits`), which is not counted.
    pub batch_copy: u64,
    /// Bytes of the KV caches: `slots` sequences of `positions` positions each.
    pub kv_cache: u64,
    pub positions: usize,
    pub slots: usize,
    pub kv_types: KvTypes,
}

impl MemoryNeed {
    /// What `file` needs on kernel `path` with a KV cache of `positions` positions of `kv_types`.
    /// Sizes come from the file's tensor table (each tensor's length, and for repacked tensors
    /// the length of the layout they are repacked into), so every layout is counted as it is.
    pub fn of(file: &BitnetFile, path: KernelPath, positions: usize, kv_types: KvTypes) -> Self {
        let mut need = MemoryNeed {
            mapped: 0,
            repacked: 0,
            repacked_tensors: 0,
            batch_copy: 0,
            kv_cache: kv_types
                .bytes_per_position(&file.header().model)
                .saturating_mul(positions as u64),
            positions,
            slots: 1,
            kv_types,
        };
        for t in file.tensors() {
            match (t.encoding, t.matrix_dims()) {
                (Encoding::Ternary(layout), Some((rows, cols))) if !path.reads_layout(layout) => {
                    need.repacked = need
                        .repacked
                        .saturating_add(weights::repacked_len(path, rows, cols));
                    need.repacked_tensors += 1;
                }
                _ => need.mapped += t.length,
            }
        }
        need
    }

    /// The same with `slots` sequences, each with a KV cache of its own (a server's slots), and
    /// with enough of them, the output matrix's [`MemoryNeed::batch_copy`] for `file` on `path`.
    pub fn with_slots(self, file: &BitnetFile, path: KernelPath, slots: usize) -> Self {
        let output = file.index().get(names::OUTPUT);
        let batch_copy = match output.or_else(|| file.index().get(names::TOKEN_EMBD)) {
            Some(t)
                if t.encoding == Encoding::Q4B32
                    && Q4Tiles::min_tokens(path).is_some_and(|n| slots >= n) =>
            {
                t.length
            }
            _ => 0,
        };
        MemoryNeed {
            kv_cache: self.kv_cache.saturating_mul(slots as u64),
            slots,
            batch_copy,
            ..self
        }
    }

    /// Bytes of its tensors, mapped or repacked, and their copies.
    pub fn tensors(&self) -> u64 {
        self.mapped
            .saturating_add(self.repacked)
            .saturating_add(self.batch_copy)
    }

    /// Every byte of it.
    pub fn total(&self) -> u64 {
        self.tensors().saturating_add(self.kv_cache)
    }

    /// `9.31 GiB of memory (tensors 8.10 GiB mapped + 0.50 GiB repacked at load (7 tensors), KV
    /// cache 1.21 GiB for 2048 positions in f16)`.
    pub fn describe(&self) -> String {
        let gib = |b: u64| format!("{:.2} GiB", b as f64 / GIB);
        let types = if self.kv_types.keys == self.kv_types.values {
            self.kv_types.keys.name().to_string()
        } else {
            format!(
                "{} keys and {} values",
                self.kv_types.keys.name(),
                self.kv_types.values.name()
            )
        };
        let repacked = if self.repacked_tensors > 0 {
            format!(
                " + {} repacked at load ({} tensors)",
                gib(self.repacked),
                self.repacked_tensors
            )
        } else {
            String::new()
        };
        let copy = if self.batch_copy > 0 {
            format!(" + {} copied for batches", gib(self.batch_copy))
        } else {
            String::new()
        };
        let positions = match self.slots {
            1 => format!("{} positions", self.positions),
            n => format!("{n} slots of {} positions", self.positions),
        };
        format!(
            "{} of memory (tensors {} mapped{repacked}{copy}, KV cache {} for {positions} in {types})",
            gib(self.total()),
            gib(self.mapped),
            gib(self.kv_cache),
        )
    }
}

/// Why a model is not loaded, or the available memory is not known.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "{file} needs {need}, but {available:.2} GiB is available: it would run from disk, \
         many times slower; {advice}, or load it anyway with --no-memory-check",
        need = need.describe(),
        available = *available as f64 / GIB
    )]
    TooLarge {
        file: String,
        need: MemoryNeed,
        available: u64,
        /// What makes it fit.
        advice: String,
    },
    #[error("{AVAILABLE_ENV}={value:?} is not a number of bytes")]
    BadOverride { value: String },
}

/// Compare what `file` (its name for messages) needs with `available` bytes: an error when it
/// needs more, a warning (returned) when it needs more than 90% of it. `smaller_cache` says how
/// to shrink the KV cache, the advice unless the tensors alone do not fit.
pub fn check(
    file: &str,
    need: &MemoryNeed,
    available: u64,
    smaller_cache: &str,
) -> Result<Option<String>, MemoryError> {
    let total = need.total();
    if total > available {
        let advice = if need.tensors() > available {
            TENSORS_DO_NOT_FIT
        } else {
            smaller_cache
        };
        return Err(MemoryError::TooLarge {
            file: file.to_string(),
            need: *need,
            available,
            advice: advice.to_string(),
        });
    }
    Ok((total as f64 > TIGHT * available as f64).then(|| {
        format!(
            "{file} needs {}, close to the {:.2} GiB available; other programs' memory may push \
             it onto the disk",
            need.describe(),
            available as f64 / GIB
        )
    }))
}

/// Where a model's bytes live while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Resident when it fits with room to spare ([`resident_fits`]), else mapped.
    Auto,
    /// Mapped from the file (`--mmap`): loads at once, the system may drop and re-read pages.
    Mapped,
    /// Copied into memory of its own, in huge pages where the system has them (`--no-mmap`,
    /// [`BitnetFile::into_resident`]): read whole at load, faster to generate from.
    Resident,
}

/// The command-line flags of memory and placement that `bitnet-run`, `bitnet-run bench` and
/// `bitnet-serve` share (flattened into each).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlacementArgs {
    /// Load the model even if it (with its KV caches) needs more memory than is available
    /// (MemAvailable): it then runs from disk, many times slower.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Map the model file (the default for a model that takes more than half the available
    /// memory): loads at once, but reads weights through 4 KiB pages.
    #[arg(long, conflicts_with = "no_mmap")]
    pub mmap: bool,
    /// Read the model into memory of its own, in huge pages where the system has them (the
    /// default for a model that takes at most half the available memory): generation reads it
    /// faster.
    #[arg(long)]
    pub no_mmap: bool,
}

impl PlacementArgs {
    /// The placement `--mmap` or `--no-mmap` asks for (clap makes them exclusive), else `Auto`.
    pub fn placement(&self) -> Placement {
        match (self.mmap, self.no_mmap) {
            (true, _) => Placement::Mapped,
            (_, true) => Placement::Resident,
            _ => Placement::Auto,
        }
    }
}

/// Whether a copy of a `file_bytes`-byte file, with what the model needs besides its mapped
/// tensors (repacked tensors, KV cache), takes at most half of `available` bytes: the other half
/// is left to the page cache's copy of the file and everything else. Unknown memory: no.
pub fn resident_fits(file_bytes: u64, need: &MemoryNeed, available: Option<u64>) -> bool {
    available.is_some_and(|available| {
        file_bytes
            .saturating_add(need.repacked)
            .saturating_add(need.kv_cache)
            <= available / 2
    })
}

/// `file` mapped or made resident as `placement` says, for a model that `need`s that much and a
/// system with `available` bytes.
pub fn place(
    file: BitnetFile,
    need: &MemoryNeed,
    placement: Placement,
    available: Option<u64>,
) -> Result<BitnetFile, bitnet_format::FormatError> {
    let resident = match placement {
        Placement::Auto => resident_fits(file.bytes().len() as u64, need, available),
        Placement::Mapped => false,
        Placement::Resident => true,
    };
    if resident {
        file.into_resident()
    } else {
        Ok(file)
    }
}

/// [`check`] against this system's [`available`] memory; `Ok(None)` where that is unknown (nothing
/// is checked).
pub fn check_system(
    file: &str,
    need: &MemoryNeed,
    smaller_cache: &str,
) -> Result<Option<String>, MemoryError> {
    match available()? {
        Some(available) => check(file, need, available, smaller_cache),
        None => Ok(None),
    }
}

/// The memory available to a new program: [`AVAILABLE_ENV`] if set, else `MemAvailable` from
/// `/proc/meminfo` (Linux). `None` where neither is known (other systems, or a Linux without that
/// line): the check is then skipped.
pub fn available() -> Result<Option<u64>, MemoryError> {
    if let Some(value) = std::env::var_os(AVAILABLE_ENV) {
        let value = value.to_string_lossy().into_owned();
        return match value.trim().parse::<u64>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(MemoryError::BadOverride { value }),
        };
    }
    // Other systems have no /proc/meminfo; the read fails and the check is skipped.
    Ok(std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_available(&text)))
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes (the file gives kB, meaning KiB).
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib = rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
        kib.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvType;

    fn need(mapped: u64, repacked: u64, kv_cache: u64) -> MemoryNeed {
        MemoryNeed {
            mapped,
            repacked,
            repacked_tensors: usize::from(repacked > 0),
            batch_copy: 0,
            kv_cache,
            positions: 2048,
            slots: 1,
            kv_types: KvTypes::uniform(KvType::F16),
        }
    }

    const G: u64 = 1 << 30;

    #[test]
    fn more_than_available_is_refused_with_both_figures_and_the_file() {
        let n = need(20 * G, 0, 4 * G + G / 2);
        let e = check("big.bitnet", &n, 22 * G, "lower -c").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("big.bitnet needs 24.50 GiB"), "{text}");
        assert!(text.contains("22.00 GiB is available"), "{text}");
        assert!(
            text.contains("KV cache 4.50 GiB for 2048 positions in f16"),
            "{text}"
        );
        assert!(text.ends_with("; lower -c, or load it anyway with --no-memory-check"));
        // One byte short is still too much.
        assert!(check("big.bitnet", &n, n.total() - 1, "lower -c").is_err());
        // When the tensors alone are too large, a smaller cache is no way out.
        let text = check("big.bitnet", &n, 19 * G, "lower -c")
            .unwrap_err()
            .to_string();
        assert!(text.contains("tensors alone do not fit"), "{text}");
        assert!(!text.contains("lower -c"), "{text}");
    }

    #[test]
    fn slots_multiply_the_kv_cache_and_are_named() {
        let golden = BitnetFile::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/format/golden.bitnet"
        ))
        .unwrap();
        let n = need(G, 0, G / 2).with_slots(&golden, KernelPath::SCALAR, 8);
        assert_eq!(n.total(), 5 * G);
        let text = check("s.bitnet", &n, 4 * G, "lower -c or -np")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("KV cache 4.00 GiB for 8 slots of 2048 positions in f16"),
            "{text}"
        );
    }

    #[test]
    fn within_ten_percent_of_available_is_a_warning() {
        let n = need(8 * G, G, G);
        assert_eq!(n.total(), 10 * G);
        // Exactly all of it fits, with a warning; so does 10.9 GiB available (10 / 10.9 > 0.9).
        let w = check("m.bitnet", &n, 10 * G, "lower -c").unwrap().unwrap();
        assert!(w.contains("m.bitnet needs 10.00 GiB"), "{w}");
        assert!(w.contains("1.00 GiB repacked at load (1 tensors)"), "{w}");
        assert!(
            check("m.bitnet", &n, 10 * G + 9 * G / 10, "lower -c")
                .unwrap()
                .is_some()
        );
        // 10 / 11.2 < 0.9: no remark.
        assert_eq!(
            check("m.bitnet", &n, 11 * G + G / 5, "lower -c").unwrap(),
            None
        );
    }

    #[test]
    fn a_copy_is_made_when_it_and_the_rest_take_at_most_half_the_memory() {
        // A 1 GiB file, nothing repacked, a 0.5 GiB KV cache: 1.5 GiB, so 3 GiB is enough.
        let n = need(G, 0, G / 2);
        let file = G;
        assert!(resident_fits(file, &n, Some(3 * G)));
        assert!(!resident_fits(file, &n, Some(3 * G - 2)));
        // Repacked tensors count beside the copy of the file.
        assert!(!resident_fits(file, &need(G, 1, G / 2), Some(3 * G)));
        assert!(!resident_fits(file, &n, None));
        let flags = |mmap, no_mmap| PlacementArgs {
            no_memory_check: false,
            mmap,
            no_mmap,
        };
        assert_eq!(flags(false, false).placement(), Placement::Auto);
        assert_eq!(flags(true, false).placement(), Placement::Mapped);
        assert_eq!(flags(false, true).placement(), Placement::Resident);
    }

    /// Tensors the kernels read count at their length in the file; the others at the length of
    /// the copy they are repacked into (here the scalar path's tiled16: rows and columns padded
    /// to 16, 2 bits each); the KV cache at 2 × layers × KV heads × head dim × element bytes
    /// per position.
    #[test]
    fn repacked_tensors_count_at_the_size_of_their_copy() {
        use bitnet_format::{
            Activation, FileWriter, GenerationDefaults, Header, ModelConfig, Provenance, Source,
            TensorSpec, TernaryLayout,
        };
        let config = ModelConfig {
            family: "test".into(),
            hidden_size: 100,
            intermediate_size: 40,
            num_layers: 3,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 24,
            vocab_size: 10,
            context_length: 64,
            rope_theta: 10000.0,
            rope_scaling: None,
            rms_norm_eps: 1e-5,
            activation: Activation::Silu,
            sub_norms: false,
            tied_embeddings: true,
            attention_bias: false,
            qk_norm: false,
        };
        let header = Header {
            model: config,
            tokenizer: None,
            generation: GenerationDefaults::default(),
            provenance: Provenance {
                source: Source::Synthetic {
                    like: "test".into(),
                    seed: 0,
                },
                files: vec![],
                converter: "test".into(),
                options: Default::default(),
            },
            tensors: vec![],
        };
        let tiled = Encoding::Ternary(TernaryLayout::Tiled { tile_rows: 16 });
        let i2s = Encoding::Ternary(TernaryLayout::I2s { block: 128 });
        let specs = [
            TensorSpec::new("tiled", tiled, &[40, 100]),
            TensorSpec::new("i2s", i2s, &[40, 100]),
            TensorSpec::new("norm", Encoding::F32, &[10]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bitnet");
        let w = FileWriter::create(&path, header, &specs).unwrap();
        for s in &specs {
            let len = s.encoding.byte_len(&s.shape).unwrap() as usize;
            w.write_tensor(&s.name, &vec![0x55; len]).unwrap();
        }
        w.finish().unwrap();
        let file = BitnetFile::open(&path).unwrap();

        let kv = KvTypes {
            keys: KvType::F32,
            values: KvType::F16,
        };
        let need = MemoryNeed::of(&file, KernelPath::SCALAR, 50, kv);
        // tiled16 [40, 100]: a 64-byte head, then 48 rows × 112 columns at 2 bits.
        let tiled16 = 48 * 112 / 4;
        assert_eq!(need.mapped, 64 + tiled16 + 10 * 4);
        assert_eq!((need.repacked, need.repacked_tensors), (tiled16, 1));
        assert_eq!(need.kv_cache, 3 * 2 * 24 * (4 + 2) * 50);
        assert_eq!(need.total(), need.mapped + need.repacked + need.kv_cache);

        let resident = |placement, available| {
            let file = BitnetFile::open(&path).unwrap();
            place(file, &need, placement, available)
                .unwrap()
                .is_resident()
        };
        assert!(resident(Placement::Auto, Some(1 << 30)));
        assert!(!resident(Placement::Auto, Some(1000)));
        assert!(!resident(Placement::Auto, None));
        assert!(resident(Placement::Resident, None));
        assert!(!resident(Placement::Mapped, Some(1 << 30)));
    }

    #[test]
    fn mem_available_is_read_in_kib() {
        let text = "MemTotal:       24631520 kB\nMemFree:         1046528 kB\n\
                    MemAvailable:   23068672 kB\nBuffers:          123456 kB\n";
        assert_eq!(mem_available(text), Some(23068672 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
    }
}
