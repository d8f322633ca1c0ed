//! The bundled demo model (testdata/demo, converted by bitnet-convert): what `bitnet-run` and
//! `bitnet-serve` run when no model is given, so that both work offline on a fresh clone.

use bitnet_format::{BitnetFile, FormatError};

static DEMO_MODEL: &[u8] = include_bytes!("../../testdata/demo/demo.bitnet");

/// What to tell a user who runs it.
pub const NOTE: &str = "no -m given: running the bundled demo model (3.8M parameters, trained on \
                        Shakespeare); make real models with bitnet-convert";

/// The demo model's file.
pub fn open() -> Result<BitnetFile, FormatError> {
    BitnetFile::from_static(DEMO_MODEL)
}
