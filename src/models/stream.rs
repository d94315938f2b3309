//! Where an encoder's layer weights live while it runs: all on the device, or streamed one layer
//! at a time from the memory-mapped files (uploaded, used and freed before the next), for
//! encoders larger than the device (T5-XXL is 9.5 GB of bf16).

use std::fmt::Display;

use crate::error::Result;

/// Whether to stream, and why (printed for the user).
#[derive(Clone, Debug, PartialEq)]
pub struct Residency {
    pub stream: bool,
    pub reason: String,
}

/// `--offload`: auto decides from the weights' size and the device's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Offload {
    Auto,
    On,
    Off,
}

impl Offload {
    /// Decide for a model of `bytes` weights plus `activations` bytes, on a device whose memory
    /// is `device` bytes (None: unknown, then auto keeps everything resident).
    pub fn decide(
        self,
        what: impl Display,
        bytes: u64,
        activations: u64,
        device: Option<u64>,
    ) -> Residency {
        let need = bytes + activations;
        match (self, device) {
            (Offload::On, _) => Residency {
                stream: true,
                reason: format!("{what}: streaming layer by layer (--offload on)"),
            },
            (Offload::Off, _) => Residency {
                stream: false,
                reason: format!("{what}: {} resident (--offload off)", size(bytes)),
            },
            (Offload::Auto, Some(device)) if need > device => Residency {
                stream: true,
                reason: format!(
                    "{what}: {} of weights and {} of activations exceed the device's {}: streaming layer by layer",
                    size(bytes),
                    size(activations),
                    size(device)
                ),
            },
            (Offload::Auto, device) => Residency {
                stream: false,
                reason: format!(
                    "{what}: {} resident ({})",
                    size(bytes),
                    device.map_or("device memory unknown".to_string(), |d| format!(
                        "fits the device's {}",
                        size(d)
                    ))
                ),
            },
        }
    }
}

/// Bytes for people: MiB below a GiB.
pub fn size(bytes: u64) -> String {
    if bytes < 1 << 30 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    }
}

/// An encoder's layers: loaded once, or loaded for each use and dropped after it.
pub enum Layers<L> {
    Resident(Vec<L>),
    Streamed(usize),
}

impl<L> Layers<L> {
    pub fn load(count: usize, stream: bool, load: impl Fn(usize) -> Result<L>) -> Result<Self> {
        if stream {
            Ok(Layers::Streamed(count))
        } else {
            Ok(Layers::Resident(
                (0..count).map(load).collect::<Result<_>>()?,
            ))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Layers::Resident(v) => v.len(),
            Layers::Streamed(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run `f` on layer i, loading it first when streamed. A streamed layer's buffers go back
    /// to the pool when it drops, where the next layer's same-sized weights take them (wgpu
    /// orders those uploads after the commands still reading the old ones), so the device holds
    /// about one layer at a time.
    pub fn with<T>(
        &self,
        i: usize,
        load: impl Fn(usize) -> Result<L>,
        f: impl FnOnce(&L) -> Result<T>,
    ) -> Result<T> {
        match self {
            Layers::Resident(v) => f(&v[i]),
            Layers::Streamed(_) => f(&load(i)?),
        }
    }
}
