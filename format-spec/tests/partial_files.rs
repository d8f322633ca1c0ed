//! `remove_partial_files` deletes every unfinished writer's temporary file in the process, so it is
//! tested in a binary of its own: beside other writer tests it would delete their files mid-write.

mod common;

use bitnet_format::{Encoding, FileWriter, TensorSpec};
use common::header;

#[test]
fn remove_partial_files_deletes_unfinished_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.bitnet");
    let w = FileWriter::create(
        &dest,
        header(),
        &[TensorSpec::new("a", Encoding::F32, &[2])],
    )
    .unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "the partial file exists"
    );
    bitnet_format::remove_partial_files();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    drop(w);
}
