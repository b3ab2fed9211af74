//! Turning numbers into files: PNG image grids, SVG plots, the HTML report, the output folder.
//!
//! Nothing here computes a statistic; it only draws and writes what others computed.

pub mod convergence;
pub mod html;
pub mod images;
pub mod plots;
