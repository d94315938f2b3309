//! Builds compute pipelines from the WGSL files in `shaders/` and caches them.
//!
//! A kernel is a list of shader files composed in order (a dtype snippet, then the kernel), plus
//! constants for variants (the activation, sizes, modes): override constants or `const` defines,
//! both folded before the driver compiles, so a variant's untaken branches cost nothing. Every
//! composed source is parsed and validated by naga first, so a broken shader reports its own
//! file and line.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::context::Gpu;
use crate::error::{KernelError, Result};

macro_rules! shader_table {
    ($($file:literal),* $(,)?) => {
        /// Every shader file, by name.
        pub const SHADERS: &[(&str, &str)] = &[
            $(($file, include_str!(concat!("../../shaders/", $file))),)*
        ];
    };
}

shader_table!(
    "common.wgsl",
    "workgroup_sum.wgsl",
    "dtype_f32.wgsl",
    "dtype_f16.wgsl",
    "dtype_f16_native.wgsl",
    "dtype_bf16.wgsl",
    "elem_f32.wgsl",
    "elem_vec4.wgsl",
    "linear_io.wgsl",
    "linear.wgsl",
    "linear_tiled.wgsl",
    "linear_tiled_wide.wgsl",
    "linear_coop.wgsl",
    "linear_scalar.wgsl",
    "linear_texture_io.wgsl",
    "linear_texture.wgsl",
    "linear_texture_k8.wgsl",
    "linear_texture_subgroup.wgsl",
    "linear_texture_k8_subgroup.wgsl",
    "wtex_f32.wgsl",
    "wtex_f16.wgsl",
    "wtex_bf16.wgsl",
    "wtex_f16x8.wgsl",
    "wtex_bf16x8.wgsl",
    "wtex_f32x8.wgsl",
    "pack_texture.wgsl",
    "im2col_texture.wgsl",
    "attention.wgsl",
    "attention_texture_io.wgsl",
    "attention_texture.wgsl",
    "attention_texture_subgroup.wgsl",
    "welford.wgsl",
    "rows_in_buffer.wgsl",
    "rows_in_texture.wgsl",
    "layer_norm.wgsl",
    "rms_norm.wgsl",
    "flat_in_buffer.wgsl",
    "flat_in_texture.wgsl",
    "group_norm.wgsl",
    "modulate.wgsl",
    "gated_residual.wgsl",
    "activation.wgsl",
    "binary.wgsl",
    "affine.wgsl",
    "conv2d.wgsl",
    "conv2d_tiled.wgsl",
    "upsample.wgsl",
    "rope.wgsl",
    "euler.wgsl",
    "cfg.wgsl",
    "squared_error.wgsl",
    "patchify.wgsl",
    "patchify_vec4.wgsl",
    "concat.wgsl",
    "transpose.wgsl",
    "softmax.wgsl",
    "crop_grid.wgsl",
    "cast.wgsl",
    "peak_fma.wgsl",
    "copy.wgsl",
);

/// The text of one shader file.
pub fn shader_source(file: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(f, _)| *f == file).map(|(_, s)| *s)
}

/// What to build: files composed in order, override constants, and whether runtime bounds
/// checks may be dropped (only where the Rust wrapper has checked every index range).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// Name shown by the profiler.
    pub name: &'static str,
    pub parts: Vec<&'static str>,
    pub constants: Vec<(&'static str, u32)>,
    /// `const NAME: u32 = V;` lines put before the sources: sizes that must be known at
    /// shader-creation time (private array lengths), unlike override constants, and the
    /// switches of the activation, matmul and LayerNorm kernels (ACT, NCHW, HAS_*).
    pub defines: Vec<(&'static str, u32)>,
    pub trusted: bool,
}

impl Kernel {
    pub fn new(name: &'static str, parts: &[&'static str]) -> Kernel {
        Kernel {
            name,
            parts: parts.to_vec(),
            constants: Vec::new(),
            defines: Vec::new(),
            trusted: false,
        }
    }

    pub fn constant(mut self, name: &'static str, value: u32) -> Kernel {
        self.constants.push((name, value));
        self
    }

    pub fn define(mut self, name: &'static str, value: u32) -> Kernel {
        self.defines.push((name, value));
        self
    }

    pub fn trusted(mut self) -> Kernel {
        self.trusted = true;
        self
    }
}

/// A composed source and where each file's lines start in it.
pub struct Composed {
    pub text: String,
    spans: Vec<(usize, &'static str)>,
    /// Byte offset where the hoisted directives end.
    directives_end: usize,
}

impl Composed {
    /// Put `const` definitions before the body (after the directives), shifting line numbers.
    pub fn define(&mut self, defines: &[(&'static str, u32)]) {
        if defines.is_empty() {
            return;
        }
        let lines: String = defines
            .iter()
            .map(|(n, v)| format!("const {n}: u32 = {v}u;\n"))
            .collect();
        let at = self.directives_end;
        self.text.insert_str(at, &lines);
        for span in &mut self.spans {
            span.0 += defines.len();
        }
    }

    /// Map a 1-based line of the composed text back to (file, line in file).
    pub fn locate(&self, line: usize) -> (String, usize) {
        let mut found = ("<composed>", line);
        for &(start, file) in &self.spans {
            if line >= start {
                found = (file, line - start + 1);
            }
        }
        (found.0.to_string(), found.1)
    }

    /// A shader error at naga's `location` in the composed text, named by file and line.
    fn error(&self, location: Option<naga::SourceLocation>, message: String) -> KernelError {
        let (file, line) = self.locate(location.map_or(0, |l| l.line_number as usize));
        KernelError::Shader {
            file,
            line,
            message,
        }
    }
}

/// Concatenate shader files; `enable` directives are hoisted to the top as WGSL requires.
pub fn compose(parts: &[&'static str]) -> Result<Composed> {
    let sources = parts
        .iter()
        .map(|&file| {
            let text = shader_source(file).ok_or_else(|| KernelError::Shader {
                file: file.to_string(),
                line: 0,
                message: "no such shader file".into(),
            })?;
            Ok((file, text))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(compose_sources(&sources))
}

/// Concatenate named sources (see [`compose`]).
pub fn compose_sources(sources: &[(&'static str, &str)]) -> Composed {
    let mut directives = String::new();
    let mut body = String::new();
    let mut spans = Vec::new();
    for &(file, src) in sources {
        spans.push((body.lines().count() + 1, file));
        for line in src.lines() {
            if line.trim_start().starts_with("enable ") {
                directives.push_str(line);
                directives.push('\n');
                body.push_str("// (enable directive hoisted)\n");
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    // Directives shift every line by their count; account for it in the spans.
    let shift = directives.lines().count();
    let spans = spans.into_iter().map(|(s, f)| (s + shift, f)).collect();
    Composed {
        directives_end: directives.len(),
        text: directives + &body,
        spans,
    }
}

/// Parse and validate a composed source with naga; errors name the file and line.
pub fn validate(composed: &Composed) -> Result<naga::Module> {
    let module = naga::front::wgsl::parse_str(&composed.text)
        .map_err(|e| composed.error(e.location(&composed.text), e.message().to_string()))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| composed.error(e.location(&composed.text), error_chain(e.as_inner())))?;
    Ok(module)
}

/// An error and its sources, outermost first: naga's validation errors say little alone
/// ("Entry point main at Compute is invalid") and the reason in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message += &format!(": {s}");
        source = s.source();
    }
    message
}

#[derive(Default)]
pub(crate) struct Pipelines {
    cache: RefCell<HashMap<Kernel, Arc<wgpu::ComputePipeline>>>,
}

impl Pipelines {
    pub(crate) fn get(&self, gpu: &Gpu, kernel: &Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.cache.borrow().get(kernel) {
            return Ok(p.clone());
        }
        let mut composed = compose(&kernel.parts)?;
        composed.define(&kernel.defines);
        validate(&composed)?;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name),
            source: wgpu::ShaderSource::Wgsl(Cow::Owned(composed.text.clone())),
        };
        let module = if kernel.trusted {
            // SAFETY: the op wrappers check every operand's extent against the indices the
            // kernel computes before dispatching (see each op's shape checks).
            unsafe {
                gpu.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            gpu.device.create_shader_module(desc)
        };
        let constants: Vec<(&str, f64)> = kernel
            .constants
            .iter()
            .map(|&(n, v)| (n, f64::from(v)))
            .collect();
        let pipeline = gpu
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(KernelError::Shader {
                file: kernel.parts.last().copied().unwrap_or("?").to_string(),
                line: 0,
                message: format!("pipeline creation failed for {}: {e}", kernel.name),
            });
        }
        let pipeline = Arc::new(pipeline);
        self.cache
            .borrow_mut()
            .insert(kernel.clone(), pipeline.clone());
        Ok(pipeline)
    }
}
