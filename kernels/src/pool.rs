//! Recycles activation buffers. A forward pass allocates the same few hundred sizes over and
//! over; handing them back to a pool when a tensor drops keeps allocation off the hot path.
//! Reuse is safe while commands using the old contents are still pending: wgpu orders the new
//! writer after the earlier readers within the queue.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Usage of every pooled buffer: kernels read and write it, copies go both ways.
pub(crate) const POOLED_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
struct Shelves {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    live_bytes: u64,
    cached_bytes: u64,
    peak_bytes: u64,
}

/// Shared between the context and every buffer it handed out.
#[derive(Clone, Default)]
pub(crate) struct Pool(Rc<RefCell<Shelves>>);

/// Device memory use as the pool sees it (pooled buffers plus weights).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MemoryStats {
    /// Bytes held by live tensors.
    pub live_bytes: u64,
    /// Bytes of freed buffers kept for reuse.
    pub cached_bytes: u64,
    /// Highest live + cached seen so far.
    pub peak_bytes: u64,
}

/// Size classes: powers of two split in four steps, so reuse is likely and waste under 25 %.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = 63 - (bytes - 1).leading_zeros() as u64; // floor(log2(bytes - 1))
    let base = 1u64 << pow;
    let step = (base / 4).max(1);
    bytes.div_ceil(step) * step
}

impl Pool {
    pub(crate) fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        let mut s = self.0.borrow_mut();
        let buffer = s.free.get_mut(&class)?.pop()?;
        s.cached_bytes -= class;
        s.live_bytes += class;
        Some(buffer)
    }

    pub(crate) fn note_new(&self, bytes: u64) {
        let mut s = self.0.borrow_mut();
        s.live_bytes += bytes;
        s.peak_bytes = s.peak_bytes.max(s.live_bytes + s.cached_bytes);
    }

    pub(crate) fn give_back(&self, class: u64, buffer: wgpu::Buffer) {
        let mut s = self.0.borrow_mut();
        s.live_bytes -= class;
        s.cached_bytes += class;
        s.free.entry(class).or_default().push(buffer);
    }

    pub(crate) fn note_freed(&self, bytes: u64) {
        self.0.borrow_mut().live_bytes -= bytes;
    }

    /// Drop every cached buffer (before a big allocation, or to measure live use).
    pub(crate) fn trim(&self) {
        let mut s = self.0.borrow_mut();
        s.free.clear();
        s.cached_bytes = 0;
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        let s = self.0.borrow();
        MemoryStats {
            live_bytes: s.live_bytes,
            cached_bytes: s.cached_bytes,
            peak_bytes: s.peak_bytes,
        }
    }

    pub(crate) fn reset_peak(&self) {
        let mut s = self.0.borrow_mut();
        s.peak_bytes = s.live_bytes + s.cached_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_bounded_waste() {
        for bytes in [1u64, 255, 256, 257, 1000, 4096, 4097, 100_000, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(
                c <= (bytes.max(256) as f64 * 1.25).ceil() as u64 + 1,
                "{bytes} -> {c}"
            );
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
