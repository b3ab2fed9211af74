//! fslens: the finite-sample lens on diffusion posterior samplers.
//!
//! Replace the prior of a diffusion model by the empirical measure of a training set
//! {a_1 … a_N}; then the exact posterior at every diffusion time is a finite sum over the
//! atoms (`docs/design.md` §3). This crate computes those sums fast (the [`engine`]),
//! runs the exact reference and the approximate samplers on the same prior ([`samplers`]),
//! and writes what they did ([`report`]).
//!
//! Imports run downward only: the binary's command line → `plan` (a checked `config`) →
//! `experiment` and `sweep` → `samplers`, `diagnostics` → `engine`, `diffusion`, `operators` →
//! `data`; `choices` names the options of every floor. The engine knows no sampler; samplers
//! print nothing; `report` turns numbers into files.

pub mod analytic;
pub mod arrays;
pub mod bench;
pub mod choices;
pub mod config;
pub mod data;
pub mod diagnostics;
pub mod diffusion;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod lens;
pub mod operators;
pub mod output;
pub mod plan;
pub mod report;
pub mod resources;
pub mod samplers;
pub mod sweep;

pub use error::{Error, Result};
