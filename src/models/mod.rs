//! Models, expressed as op calls on the kernel library.

pub mod clip;
pub mod embedding;
pub mod flux;
pub mod joint;
pub mod linear;
pub mod mmdit;
pub mod stream;
pub mod t5;
pub mod transformer;
pub mod vae;

pub use linear::Linear;
