//! End-to-end tests across the workspace's binaries and file formats live in `tests/`; this library
//! holds what they share.
