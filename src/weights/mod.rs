//! Model weights: memory-mapped safetensors files, model folder discovery, key layouts.

pub mod discover;
pub mod file;

pub use discover::{Component, ConfigOverride, ModelPath};
pub use file::{TensorRef, WeightSet};
