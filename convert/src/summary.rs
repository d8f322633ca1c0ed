//! The summary printed after a conversion: tensors, parameters, bytes in and out, bits per weight,
//! time.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub output: PathBuf,
    /// The source as named in messages.
    pub source: String,
    pub family: String,
    pub tensors: usize,
    /// Elements of every tensor.
    pub parameters: u64,
    /// Elements of the ternary tensors.
    pub ternary_weights: u64,
    /// Bytes of the ternary tensors (codes, padding and scales).
    pub ternary_bytes: u64,
    /// Bytes of every source file read.
    pub bytes_in: u64,
    /// Size of the written file.
    pub bytes_out: u64,
    pub elapsed: Duration,
    /// Whether the ternary tensors and the written file were verified.
    pub verified: bool,
    /// One-line remarks (defaults applied, inconsistencies resolved, buffers skipped).
    pub notes: Vec<String>,
    /// One-line warnings: what may make the output wrong or unusable somewhere.
    pub warnings: Vec<String>,
}

impl ConvertReport {
    /// Bits per ternary weight, padding and scales included.
    pub fn ternary_bits_per_weight(&self) -> f64 {
        bits(self.ternary_bytes, self.ternary_weights)
    }

    /// Bits of the whole file per parameter.
    pub fn bits_per_parameter(&self) -> f64 {
        bits(self.bytes_out, self.parameters)
    }
}

fn bits(bytes: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / n as f64
    }
}

/// `1234567` → `1.23 M`.
pub fn human_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.2} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

/// `1234567` → `1.18 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

impl fmt::Display for ConvertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} ({}) from {}",
            self.output.display(),
            self.family,
            self.source
        )?;
        writeln!(f, "  tensors         {}", self.tensors)?;
        writeln!(
            f,
            "  parameters      {} ({} ternary)",
            human_count(self.parameters),
            human_count(self.ternary_weights)
        )?;
        writeln!(
            f,
            "  bytes in        {} ({})",
            human_bytes(self.bytes_in),
            self.bytes_in
        )?;
        writeln!(
            f,
            "  bytes out       {} ({})",
            human_bytes(self.bytes_out),
            self.bytes_out
        )?;
        writeln!(
            f,
            "  bits per weight {:.3} ternary, {:.3} over the whole file",
            self.ternary_bits_per_weight(),
            self.bits_per_parameter()
        )?;
        writeln!(
            f,
            "  verified        {}",
            if self.verified {
                "yes (every ternary tensor against the reference unpacker; file checksums re-read)"
            } else {
                "no (--no-verify)"
            }
        )?;
        write!(f, "  time            {:.2} s", self.elapsed.as_secs_f64())
    }
}
