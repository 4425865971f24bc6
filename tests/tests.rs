//! The integration tests: ONE binary (it links the library once), one module per feature, and
//! the helpers they share in `common/` (ripgrep's `tests/` is the model). Run one feature with
//! `cargo test --test integration apply::`.

mod common;

mod apply;
mod contract;
mod explain;
mod insight;
mod plan;
mod policy;
mod read;
mod run;
mod sim;
