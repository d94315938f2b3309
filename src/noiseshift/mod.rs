//! NoiseShift calibration (arXiv 2510.02307, as ../shared/NOISESHIFT.md fixes it): per sampling
//! step, the conditioning level sigma_hat that minimises the one-step forward/reverse mismatch,
//! found by a coarse-to-fine grid search whose candidates x samples run as one batch.

pub mod dataset;
pub mod grid;
pub mod images;
pub mod plot;
pub mod search;
pub mod selfgen;
pub mod table;
pub mod velocity;
