//! Models, expressed as op calls on the kernel library.

pub mod linear;
pub mod mmdit;
pub mod vae;

pub use linear::Linear;
