//! `bitnet-run`: load `.bitnet` models and run them on CPUs.

pub mod chat;
pub mod demo;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
mod huge_pages;
pub mod kernels;
pub mod model;
pub mod sampling;
pub mod tokenizer;
