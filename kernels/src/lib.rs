//! noiseshift-kernels: the GPU layer. Tensors, WGSL compute kernels with their CPU references,
//! and a per-dispatch profiler. Knows nothing of models.

pub mod caps;
pub mod ceilings;
pub mod context;
pub mod error;
pub mod matrix;
pub mod ops;
pub mod pipelines;
mod pool;
pub mod profile;
pub mod reference;
pub mod suite;
pub mod tensor;

pub use caps::{Caps, Variant};
pub use context::{AdapterReport, Gpu, GpuOptions, list_adapters, test_adapters};
pub use error::{KernelError, Result};
pub use matrix::{Matrix, MatrixLayout};
pub use pool::MemoryStats;
pub use profile::{Ceilings, Cost};
pub use tensor::{DType, Tensor};
