//! Turning numbers into files: PNG image grids, JSON summaries, the output folder.
//!
//! Nothing here computes a statistic; it only draws and writes what others computed.

pub mod images;
pub mod output;
