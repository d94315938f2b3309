//! Every shader, composed with every weight-dtype snippet it may be built with, parses and
//! validates under naga; a broken shader is reported with its own file and line.

use noiseshift_kernels::KernelError;
use noiseshift_kernels::pipelines::{SHADERS, compose, compose_sources, validate};

/// Files of shared functions that kernels are composed with. welford.wgsl, which needs an
/// element snippet, replaces workgroup_sum.wgsl in the kernels that reduce statistics.
const LIBRARY: [&str; 2] = ["common.wgsl", "workgroup_sum.wgsl"];
const WELFORD: &str = "welford.wgsl";
/// Operands of the buffer matmuls, composed before linear.wgsl and linear_tiled*.wgsl.
const LINEAR_IO: &str = "linear_io.wgsl";
/// The same for the texture matmuls, before linear_texture*.wgsl.
const LINEAR_TEXTURE_IO: &str = "linear_texture_io.wgsl";
/// And for the texture attention kernels, before attention_texture*.wgsl.
const ATTENTION_TEXTURE_IO: &str = "attention_texture_io.wgsl";
/// Where kernels that call `x_at` (rows) or `x_flat` read their input: each with the element
/// snippets it serves (texels are vec4s).
const ROWS_IN: [(&str, &[&str]); 2] = [
    ("rows_in_buffer.wgsl", &["elem_f32.wgsl", "elem_vec4.wgsl"]),
    ("rows_in_texture.wgsl", &["elem_vec4.wgsl"]),
];
const FLAT_IN: [(&str, &[&str]); 2] = [
    ("flat_in_buffer.wgsl", &["elem_f32.wgsl", "elem_vec4.wgsl"]),
    ("flat_in_texture.wgsl", &["elem_vec4.wgsl"]),
];

const SNIPPETS: [&str; 4] = [
    "dtype_f32.wgsl",
    "dtype_f16.wgsl",
    "dtype_f16_native.wgsl",
    "dtype_bf16.wgsl",
];

#[test]
fn every_shader_validates_with_every_dtype_snippet() {
    let kernels: Vec<&'static str> = SHADERS
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| {
            !["dtype_", "wtex_", "elem_"]
                .iter()
                .any(|p| f.starts_with(p))
                && !LIBRARY.contains(f)
                && *f != WELFORD
                && *f != LINEAR_IO
                && *f != LINEAR_TEXTURE_IO
                && *f != ATTENTION_TEXTURE_IO
                && !ROWS_IN.iter().chain(&FLAT_IN).any(|(r, _)| r == f)
        })
        .collect();
    assert!(
        kernels.len() >= 20,
        "shader table lists {} kernels",
        kernels.len()
    );
    for kernel in kernels {
        let text = SHADERS.iter().find(|(f, _)| *f == kernel).unwrap().1;
        // Kernels that read weights through `WPack`, `w_texel` or `w_step` are built with a
        // dtype snippet, the row kernels with an element snippet; each after the library files
        // it uses.
        const ELEM: [&str; 2] = ["elem_f32.wgsl", "elem_vec4.wgsl"];
        let (snippets, library): (&[&str], &[&str]) = if text.contains("store_one(") {
            (&SNIPPETS, &[LIBRARY[0], LIBRARY[1], LINEAR_IO])
        } else if text.contains("array<WPack>") {
            (&SNIPPETS, &LIBRARY)
        } else if text.contains("w_step(") {
            (
                &["wtex_f16x8.wgsl", "wtex_bf16x8.wgsl", "wtex_f32x8.wgsl"],
                &[LIBRARY[0], LINEAR_TEXTURE_IO],
            )
        } else if text.contains("w_texel(") {
            (
                &["wtex_f32.wgsl", "wtex_f16.wgsl", "wtex_bf16.wgsl"],
                &[LIBRARY[0], LINEAR_TEXTURE_IO],
            )
        } else if text.contains("load_queries(") {
            (&[], &[ATTENTION_TEXTURE_IO])
        } else if kernel == "softmax.wgsl" {
            // Self-contained: its own workgroup merge.
            (&[], &[])
        } else if text.contains("workgroup_stats(") {
            (&ELEM, &[LIBRARY[0], WELFORD])
        } else if text.contains("array<Elem>") {
            (&ELEM, &LIBRARY)
        } else {
            (&[], &LIBRARY)
        };
        let compose_with = |snippet: Option<&'static str>| -> Vec<&'static str> {
            snippet
                .into_iter()
                .chain(library.iter().copied())
                .chain([kernel])
                .collect()
        };
        let inputs = if text.contains("x_at(") {
            &ROWS_IN[..]
        } else if text.contains("x_flat(") {
            &FLAT_IN[..]
        } else {
            &[]
        };
        let variants: Vec<Vec<&'static str>> = if !inputs.is_empty() {
            inputs
                .iter()
                .flat_map(|(input, elems)| {
                    elems.iter().map(|elem| {
                        let mut parts = compose_with(Some(elem));
                        parts.insert(parts.len() - 1, input);
                        parts
                    })
                })
                .collect()
        } else if snippets.is_empty() {
            vec![compose_with(None)]
        } else {
            snippets.iter().map(|s| compose_with(Some(s))).collect()
        };
        // Sizes the ops define at build time: the reduction width (workgroup_sum.wgsl or
        // welford.wgsl, part of every composition here), the sets welford.wgsl reduces at once
        // (layer_norm's rows per workgroup), flat_in_texture.wgsl's row width and
        // the attention kernels' head dim / 4 (and keys per tile) and score switches (CAUSAL,
        // BIAS), the tiled conv's kernel size (KH, KW) and weight loads (WVEC), the activation of
        // the matmuls, activation.wgsl and
        // group_norm.wgsl (ACT; SiLU), LayerNorm's optional parts (HAS_*) and the texture
        // matmuls' output mode (NCHW; convolution pixels).
        let defines: &[(&str, u32)] = if text.contains("load_queries(") {
            &[("WG", 256), ("D4", 16), ("CAUSAL", 1), ("BIAS", 1)]
        } else if kernel == "attention.wgsl" {
            &[
                ("WG", 256),
                ("D4", 16),
                ("TK", 32),
                ("CAUSAL", 1),
                ("BIAS", 1),
            ]
        } else if kernel == "conv2d_tiled.wgsl" {
            &[("WG", 256), ("KH", 3), ("KW", 3), ("WVEC", 1)]
        } else if text.contains("workgroup_stats(") {
            &[
                ("WG", 256),
                ("SETS", 2),
                ("FLAT_WIDTH", 4096),
                ("ACT", 4),
                ("HAS_WEIGHT", 1),
                ("HAS_BIAS", 1),
                ("HAS_MOD", 1),
            ]
        } else {
            &[("WG", 256), ("ACT", 4), ("NCHW", 1)]
        };
        for parts in variants {
            let mut composed = compose(&parts).unwrap();
            composed.define(defines);
            if let Err(e) = validate(&composed) {
                panic!("{parts:?}: {e}");
            }
        }
    }
}

#[test]
fn errors_name_the_file_and_line() {
    let broken = "fn ok() {}\n\nfn bad() -> f32 {\n    return undefined_name;\n}\n";
    let composed = compose_sources(&[
        (
            "dtype_f16_native.wgsl",
            "enable f16;\nalias WPack = vec4<f16>;\n",
        ),
        ("broken.wgsl", broken),
    ]);
    match validate(&composed) {
        Err(KernelError::Shader {
            file,
            line,
            message,
        }) => {
            assert_eq!(file, "broken.wgsl", "{message}");
            assert_eq!(line, 4, "{message}");
        }
        other => panic!("expected a shader error, got {other:?}"),
    }
}

#[test]
fn the_shader_table_lists_every_wgsl_file_once() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SHADERS.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk);
}
