//! noiseshift: flow-matching text-to-image models (SD3, SD3.5) on any GPU through wgpu, made
//! good at low resolution with NoiseShift calibration (arXiv 2510.02307).

pub mod builtin;
pub mod cli;
pub mod error;
pub mod files;
pub mod images;
pub mod models;
pub mod noise;
pub mod noiseshift;
pub mod profiling;
pub mod progress;
pub mod sampler;
pub mod schedule;
pub mod tensor_file;
pub mod text;
pub mod weights;

pub use error::{Error, Result};
