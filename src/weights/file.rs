//! Memory-mapped safetensors files. Headers are validated by the `safetensors` crate (lengths,
//! offsets that must tile the data without gaps or overlaps); tensors are read as borrowed byte
//! slices of the mapping, so uploading a weight never makes a second host copy of the model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use noiseshift_kernels::{DType, Gpu, Tensor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, input};

struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

struct Mapped {
    path: PathBuf,
    map: Mmap,
    /// Canonical header listing for the fingerprint.
    listing: String,
}

/// A set of safetensors files seen as one name -> tensor table.
pub struct WeightSet {
    files: Vec<Mapped>,
    entries: HashMap<String, Entry>,
    /// Tensors of dtypes we cannot use (integers, f64, fp8), with their file and dtype.
    unsupported: HashMap<String, (usize, String)>,
}

/// One tensor: where it lives, its dtype and shape, and its stored bytes.
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub path: &'a Path,
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

fn dtype_of(d: safetensors::Dtype) -> Option<DType> {
    match d {
        safetensors::Dtype::F32 => Some(DType::F32),
        safetensors::Dtype::F16 => Some(DType::F16),
        safetensors::Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

impl WeightSet {
    /// Map and validate every file; tensor names must be unique across files.
    pub fn open(paths: &[PathBuf]) -> Result<WeightSet> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        let mut unsupported = HashMap::new();
        for path in paths {
            let (file, _) = crate::files::open_regular(path)?;
            // SAFETY: the mapping is read-only; a file truncated underneath us would fault, as
            // with every mmap-based loader; we do not modify model files.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::read(path, e))?;
            let (header_len, meta) =
                safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                    Error::Input(format!(
                        "{}: not a valid safetensors file: {e}",
                        path.display()
                    ))
                })?;
            let data_start = 8 + header_len;
            let index = files.len();
            let mut listing = BTreeMap::new();
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                listing.insert(
                    name.clone(),
                    format!("{name} {:?} {:?} {s} {e}\n", info.dtype, info.shape),
                );
                // Other dtypes are refused only if a model asks for the tensor.
                let Some(dtype) = dtype_of(info.dtype) else {
                    unsupported.insert(name, (index, format!("{:?}", info.dtype)));
                    continue;
                };
                if entries.contains_key(&name) {
                    return input(format!(
                        "tensor '{name}' appears twice (again in {})",
                        path.display()
                    ));
                }
                entries.insert(
                    name,
                    Entry {
                        file: index,
                        dtype,
                        shape: info.shape.clone(),
                        start: data_start + s,
                        end: data_start + e,
                    },
                );
            }
            files.push(Mapped {
                path: path.clone(),
                map,
                listing: listing.into_values().collect(),
            });
        }
        Ok(WeightSet {
            files,
            entries,
            unsupported,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The tensor `name`, or an error naming it and the files searched.
    pub fn get(&self, name: &str) -> Result<TensorRef<'_>> {
        let Some((key, e)) = self.entries.get_key_value(name) else {
            if let Some((file, dtype)) = self.unsupported.get(name) {
                let path = self.files[*file].path.display();
                return input(format!(
                    "tensor '{name}' in {path} has dtype {dtype}; only f32, f16 and bf16 are supported"
                ));
            }
            let files: Vec<String> = self
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            return input(format!("missing tensor '{name}' in {}", files.join(", ")));
        };
        let f = &self.files[e.file];
        Ok(TensorRef {
            name: key,
            path: &f.path,
            dtype: e.dtype,
            shape: &e.shape,
            bytes: &f.map[e.start..e.end],
        })
    }

    /// The tensor, checked against the expected shape.
    /// The shape of `name`, which must have `rank` dims, each 1 to `max` (a config inferred
    /// from shapes trusts no dim a file states before this).
    pub fn shape_checked(&self, name: &str, rank: usize, max: usize) -> Result<Vec<usize>> {
        let t = self.get(name)?;
        if t.shape.len() != rank || t.shape.iter().any(|&d| d == 0 || d > max) {
            return input(format!(
                "tensor '{name}' in {} has shape {:?}: expected {rank} dims, each 1 to {max}",
                t.path.display(),
                t.shape
            ));
        }
        Ok(t.shape.to_vec())
    }

    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<TensorRef<'_>> {
        let t = self.get(name)?;
        if t.shape != shape {
            return input(format!(
                "tensor '{name}' in {} has shape {:?}, expected {shape:?}",
                t.path.display(),
                t.shape
            ));
        }
        Ok(t)
    }

    /// Total parameter count and stored bytes of the tensors whose names start with `prefix`.
    pub fn totals(&self, prefix: &str) -> (u64, u64) {
        self.entries
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .fold((0, 0), |(p, b), (_, e)| {
                (
                    p + e.shape.iter().product::<usize>() as u64,
                    b + (e.end - e.start) as u64,
                )
            })
    }

    /// Count of tensors per dtype under `prefix`.
    pub fn dtype_counts(&self, prefix: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, e) in self.entries.iter().filter(|(n, _)| n.starts_with(prefix)) {
            *counts.entry(e.dtype.name().to_string()).or_insert(0) += 1;
        }
        counts
    }

    /// A hash over the headers (names, dtypes, shapes, offsets) of every file: identifies the
    /// weights without reading them.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update(f.listing.as_bytes());
        }
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }
}

impl TensorRef<'_> {
    /// Upload in the stored dtype (one buffer, no host copy beyond the driver's staging).
    pub fn upload(&self, gpu: &Gpu) -> Result<Tensor> {
        self.upload_as(gpu, self.shape)
    }

    /// Upload under another shape with the same element count (a conv kernel used as a linear).
    pub fn upload_as(&self, gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_raw(gpu, shape, self.dtype, self.bytes).map_err(|e| {
            Error::Input(format!(
                "tensor '{}' in {}: {e}",
                self.name,
                self.path.display()
            ))
        })
    }
}
