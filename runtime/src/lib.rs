//! `bitnet-run`: load `.bitnet` models and run them on CPUs.

pub mod chat;
#[doc(hidden)]
pub mod fuzz;
pub mod kernels;
pub mod model;
pub mod sampling;
pub mod threads;
pub mod tokenizer;
