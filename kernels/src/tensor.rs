//! Tensor: a device buffer with a shape and a dtype. Activations are f32; weights keep their
//! stored dtype, with f16 and bf16 packed two to a u32 and widened inside the shaders.

use std::fmt;
use std::rc::Rc;

use crate::context::{Bind, Gpu};
use crate::error::{KernelError, Result};
use crate::pool::{POOLED_USAGE, Pool, size_class};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Host-side conversion of stored bytes to f32 (tests, small readbacks).
    pub fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Owns a device buffer; pooled buffers go back to the pool when the last tensor drops.
struct Storage {
    buffer: Option<wgpu::Buffer>,
    bytes: u64,
    pool: Option<Pool>,
    stats: Pool,
}

impl Drop for Storage {
    fn drop(&mut self) {
        let buffer = self.buffer.take().expect("buffer present until drop");
        match &self.pool {
            Some(pool) => pool.give_back(self.bytes, buffer),
            None => self.stats.note_freed(self.bytes),
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    storage: Rc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

/// Bytes a tensor's data takes, rounded up to the 4-byte granularity of buffers.
fn data_bytes(numel: usize, dtype: DType) -> u64 {
    ((numel * dtype.size()) as u64).next_multiple_of(4)
}

impl Tensor {
    /// An uninitialised tensor from the pool (NaN-filled while the context poisons).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        // 16-byte granularity: kernels read rows as vec4.
        let class = size_class(data_bytes(numel, dtype).next_multiple_of(16));
        let buffer = match gpu.pool.take(class) {
            Some(b) => b,
            None => {
                let b = gpu.create_buffer("tensor", class, POOLED_USAGE)?;
                gpu.pool.note_new(class);
                b
            }
        };
        let t = Tensor {
            storage: Rc::new(Storage {
                buffer: Some(buffer),
                bytes: class,
                pool: Some(gpu.pool.clone()),
                stats: gpu.pool.clone(),
            }),
            shape: shape.to_vec(),
            dtype,
        };
        if gpu.poisoning() {
            gpu.upload(t.buffer(), 0, &vec![0xFF; t.byte_len() as usize])?;
        }
        Ok(t)
    }

    /// A tensor holding `data` (f32).
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(KernelError::Shape {
                op: "upload",
                message: format!(
                    "shape {shape:?} has {numel} elements but {} values were given",
                    data.len()
                ),
            });
        }
        let t = Tensor::empty(gpu, shape, DType::F32)?;
        gpu.upload(t.buffer(), 0, bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// A weight uploaded once from its stored little-endian bytes, in its own exact-size buffer.
    pub fn from_raw(gpu: &Gpu, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        Tensor::from_raw_parts(gpu, shape, dtype, &[bytes])
    }

    /// A weight whose stored bytes come in consecutive parts (q, k and v projections fused
    /// into one matrix), each written straight into its place in the device buffer.
    pub fn from_raw_parts(
        gpu: &Gpu,
        shape: &[usize],
        dtype: DType,
        parts: &[&[u8]],
    ) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let given: usize = parts.iter().map(|p| p.len()).sum();
        if numel * dtype.size() != given {
            return Err(KernelError::Shape {
                op: "upload",
                message: format!(
                    "shape {shape:?} {dtype} needs {} bytes but {given} were given",
                    numel * dtype.size()
                ),
            });
        }
        let size = data_bytes(numel, dtype).next_multiple_of(16).max(16);
        let buffer = gpu.create_buffer("weight", size, POOLED_USAGE)?;
        gpu.pool.note_new(size);
        let mut offset = 0u64;
        for part in parts {
            if !offset.is_multiple_of(4) {
                return Err(KernelError::Shape {
                    op: "upload",
                    message: format!(
                        "part at byte {offset} of a {dtype} weight is not 4-byte aligned"
                    ),
                });
            }
            gpu.upload(&buffer, offset, part)?;
            offset += part.len() as u64;
        }
        Ok(Tensor {
            storage: Rc::new(Storage {
                buffer: Some(buffer),
                bytes: size,
                pool: None,
                stats: gpu.pool.clone(),
            }),
            shape: shape.to_vec(),
            dtype,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the last dimension (row length).
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    /// Product of all but the last dimension.
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }

    /// Bytes of data, rounded up to a multiple of 4.
    pub fn byte_len(&self) -> u64 {
        data_bytes(self.numel(), self.dtype)
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.storage
            .buffer
            .as_ref()
            .expect("buffer present until drop")
    }

    /// The same data under another shape with as many elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(KernelError::Shape {
                op: "reshape",
                message: format!("cannot view {:?} as {shape:?}", self.shape),
            });
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// Bind the whole tensor, rounded up to whole 16-byte packs (buffers are allocated so) so
    /// that kernels reading vec4 or packed-f16 arrays see the last partial pack.
    pub(crate) fn bind<'a>(&'a self, label: &'a str) -> Bind<'a> {
        Bind::Buffer {
            buffer: self.buffer(),
            offset: 0,
            size: self.byte_len().next_multiple_of(16).max(16),
            label,
        }
    }

    /// Bind a byte range (offsets must respect the device's storage offset alignment). The
    /// size is rounded up to 16 bytes within the allocation, so that a range ending inside an
    /// element of up to 16 bytes (four packed f16 or bf16 weights) still binds that element:
    /// NVIDIA's driver clamps reads past a binding's end where Mesa reads on.
    pub(crate) fn bind_range<'a>(&'a self, label: &'a str, offset: u64, size: u64) -> Bind<'a> {
        let storage = self.storage.bytes.saturating_sub(offset);
        Bind::Buffer {
            buffer: self.buffer(),
            offset,
            size: size
                .next_multiple_of(16)
                .min(storage)
                .max(size.next_multiple_of(4)),
            label,
        }
    }

    /// Read the data back as f32 (f16 and bf16 are widened on the host).
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let raw = gpu.read_bytes(self.buffer(), 0, self.byte_len())?;
        let mut v = self.dtype.to_f32(&raw);
        v.truncate(self.numel());
        Ok(v)
    }

    /// Copy the whole tensor's data into a new pooled tensor.
    pub fn duplicate(&self, gpu: &Gpu) -> Result<Tensor> {
        let out = Tensor::empty(gpu, &self.shape, self.dtype)?;
        gpu.copy(self.buffer(), 0, out.buffer(), 0, self.byte_len());
        Ok(out)
    }
}

impl Gpu {
    /// Device memory in use and its peak (tensors and weights through this context).
    pub fn memory(&self) -> crate::pool::MemoryStats {
        self.pool.stats()
    }

    /// Start a new peak-memory measurement from the current use.
    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }

    /// Release cached activation buffers.
    pub fn trim_memory(&self) {
        self.pool.trim();
    }
}
