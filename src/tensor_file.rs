//! Small safetensors files of our CLI formats (latents, embeddings, datasets): read into host
//! f32 arrays (f16/bf16 inputs are widened) and written atomically.

use std::collections::HashMap;
use std::path::Path;

use noiseshift_kernels::{DType, Gpu, Tensor};

use crate::error::{Error, Result, input};
use crate::weights::WeightSet;

/// A host tensor.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }

    pub fn upload(&self, gpu: &Gpu) -> Result<Tensor> {
        Ok(Tensor::from_f32(gpu, &self.shape, &self.data)?)
    }

    /// Rows `range` of the first dimension.
    pub fn rows(&self, range: std::ops::Range<usize>) -> HostTensor {
        let row: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = range.len();
        HostTensor {
            shape,
            data: self.data[range.start * row..range.end * row].to_vec(),
        }
    }

    /// The tensors' rows one after the other (all alike past the first dimension).
    pub fn concat(parts: &[&HostTensor]) -> HostTensor {
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        HostTensor::new(shape, data)
    }

    /// The rows at `indices` of the first dimension, in that order (repeats allowed).
    pub fn gather(&self, indices: &[usize]) -> HostTensor {
        let row: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = indices.len();
        let data = indices
            .iter()
            .flat_map(|&i| self.data[i * row..(i + 1) * row].iter().copied())
            .collect();
        HostTensor { shape, data }
    }
}

/// All tensors of a safetensors file, as f32.
pub fn read(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let set = WeightSet::open(&[path.to_path_buf()])?;
    let names: Vec<String> = set.names().map(str::to_string).collect();
    let mut out = HashMap::new();
    for name in names {
        let t = set.get(&name)?;
        let data = t.dtype.to_f32(t.bytes);
        // NaN or Inf in an input would silently poison every output computed from it.
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            let bad = data.iter().filter(|v| !v.is_finite()).count();
            return input(format!(
                "{}: tensor '{name}' holds {bad} non-finite values (NaN or Inf; the first at flat index {i})",
                path.display()
            ));
        }
        out.insert(
            name,
            HostTensor {
                shape: t.shape.to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Take tensor `name` out of a file's tensors, or say which file lacks it.
pub fn take(
    tensors: &mut HashMap<String, HostTensor>,
    name: &str,
    path: &Path,
) -> Result<HostTensor> {
    tensors
        .remove(name)
        .ok_or_else(|| Error::Input(format!("{} has no tensor '{name}'", path.display())))
}

/// Write f32 tensors to `path` atomically (a temporary file in the same folder, then rename).
pub fn write(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(&t.data),
            )
            .map_err(|e| Error::Failure(format!("tensor '{name}': {e}")))?;
            Ok((name.to_string(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| Error::Failure(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Write bytes to `path` through a temporary sibling and a rename, so a reader never sees a
/// partial file and a failure leaves any previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::Write {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::Input(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Write {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

/// A host tensor from a device tensor.
pub fn download(gpu: &Gpu, t: &Tensor) -> Result<HostTensor> {
    if t.dtype() != DType::F32 {
        return input(format!("expected an f32 tensor, got {}", t.dtype()));
    }
    Ok(HostTensor {
        shape: t.shape().to_vec(),
        data: t.to_vec(gpu)?,
    })
}
