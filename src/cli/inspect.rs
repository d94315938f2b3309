//! `noiseshift inspect MODEL`: what a model path holds, read from headers only (no GPU needed).

use std::path::PathBuf;

use serde_json::json;

use crate::error::{Result, input};
use crate::models::flux::{FluxConfig, keys::is_flux};
use crate::models::mmdit::MmditConfig;
use crate::weights::{ConfigOverride, WeightSet};

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers pipeline folder, a transformer folder (config.json + safetensors), a
    /// single-file checkpoint, or `builtin` (the default: the small model inside this program).
    model: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// A transformer config.json, or a diffusers folder whose transformer/config.json is used,
    /// for single files whose configuration cannot be inferred from the shapes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also read every transformer weight and report tensors holding NaN or Inf (exit code 2
    /// when any does).
    #[arg(long)]
    check: bool,
}

/// Every tensor of `weights` with NaN or Inf, as (name, how many), read tensor by tensor.
fn non_finite(weights: &WeightSet) -> Result<Vec<(String, usize)>> {
    let mut names: Vec<String> = weights.names().map(str::to_string).collect();
    names.sort();
    let mut progress = crate::progress::Progress::new("checking weights", names.len() as u64);
    let mut bad = Vec::new();
    for name in names {
        let t = weights.get(&name)?;
        let n = t
            .dtype
            .to_f32(t.bytes)
            .iter()
            .filter(|v| !v.is_finite())
            .count();
        if n > 0 {
            bad.push((name.clone(), n));
        }
        progress.advance(1, &name);
    }
    progress.finish();
    Ok(bad)
}

/// The transformer's description: JSON fields and the lines printed, per family.
struct Described {
    family: &'static str,
    format: &'static str,
    prefix: String,
    fields: serde_json::Value,
    lines: Vec<String>,
}

fn describe_mmdit(c: &MmditConfig, format: &'static str, prefix: String) -> Described {
    Described {
        family: c.family(),
        format,
        prefix,
        fields: json!({
            "config_source": c.source,
            "depth": c.depth,
            "hidden": c.hidden,
            "heads": c.heads,
            "head_dim": c.head_dim,
            "patch_size": c.patch,
            "in_channels": c.in_channels,
            "joint_attention_dim": c.joint_attention_dim,
            "pooled_projection_dim": c.pooled_dim,
            "pos_embed_max_size": c.pos_embed_max_size,
            "qk_norm": c.qk_norm,
            "dual_attention_layers": c.dual_attention_layers,
        }),
        lines: vec![
            format!(
                "depth {}, hidden {}, {} heads x {}, patch {}, {} latent channels",
                c.depth, c.hidden, c.heads, c.head_dim, c.patch, c.in_channels
            ),
            format!(
                "position grid {0}x{0} (up to {1}x{1} px), qk norm: {2}, dual attention layers: {3:?}",
                c.pos_embed_max_size,
                c.pos_embed_max_size * c.patch * 8,
                if c.qk_norm { "RMSNorm" } else { "none" },
                c.dual_attention_layers
            ),
            format!(
                "text: joint attention dim {}, pooled dim {}",
                c.joint_attention_dim, c.pooled_dim
            ),
            format!("config: {}", c.source),
        ],
    }
}

fn describe_flux(c: &FluxConfig, format: &'static str, prefix: String) -> Described {
    Described {
        family: c.family(),
        format,
        prefix,
        fields: json!({
            "config_source": c.source,
            "double_blocks": c.double_blocks,
            "single_blocks": c.single_blocks,
            "depth": c.double_blocks + c.single_blocks,
            "hidden": c.hidden,
            "heads": c.heads,
            "head_dim": c.head_dim,
            "in_channels": c.in_channels,
            "latent_channels": c.latent_channels(),
            "joint_attention_dim": c.joint_attention_dim,
            "pooled_projection_dim": c.pooled_dim,
            "guidance_embeds": c.guidance_embeds,
            "axes_dims_rope": c.axes_dims,
        }),
        lines: vec![
            format!(
                "depth {} ({} double-stream + {} single-stream blocks), hidden {}, {} heads x {}, {} latent channels packed 2x2",
                c.double_blocks + c.single_blocks,
                c.double_blocks,
                c.single_blocks,
                c.hidden,
                c.heads,
                c.head_dim,
                c.latent_channels()
            ),
            format!(
                "guidance embedding: {}, RoPE axes {:?}",
                if c.guidance_embeds {
                    "yes (FLUX.1-dev)"
                } else {
                    "none (FLUX.1-schnell)"
                },
                c.axes_dims
            ),
            format!(
                "text: T5 width {}, pooled (CLIP-L) {}",
                c.joint_attention_dim, c.pooled_dim
            ),
            format!("config: {}", c.source),
        ],
    }
}

pub fn run(args: Args) -> Result<()> {
    let path = crate::builtin::resolve(args.model.as_deref())?;
    let weights = WeightSet::open(&path.transformer_files)?;
    let configs = ConfigOverride::read(args.config.as_deref())?;
    let json = configs.transformer.as_ref().or(path.config.as_ref());
    let d = if is_flux(&weights) {
        let (c, keys) = FluxConfig::resolve(&weights, json)?;
        describe_flux(&c, keys.name(), keys.prefix().to_string())
    } else {
        let (c, format) = MmditConfig::resolve(&weights, json)?;
        describe_mmdit(&c, format.name(), format.prefix().to_string())
    };
    let (parameters, bytes) = weights.totals(&d.prefix);
    let components: Vec<&str> = path.components(&weights).iter().map(|c| c.name()).collect();
    let mut report = json!({
        "path": path.path,
        "name": path.name(),
        "family": d.family,
        "format": d.format,
        "parameters": parameters,
        "bytes": bytes,
        "dtypes": weights.dtype_counts(&d.prefix),
        "components": components,
        "files": weights.paths(),
        "fingerprint": weights.fingerprint(),
        "scheduler_shift": path.scheduler_shift,
        "scheduler": path.scheduler,
    });
    for (k, v) in d.fields.as_object().expect("an object") {
        report[k] = v.clone();
    }
    let bad = if args.check {
        Some(non_finite(&weights)?)
    } else {
        None
    };
    if let Some(bad) = &bad {
        report["non_finite_tensors"] = json!(bad);
    }
    let refuse = || -> Result<()> {
        match &bad {
            Some(b) if !b.is_empty() => input(format!(
                "{} of the transformer's tensors hold NaN or Inf (first: {} with {})",
                b.len(),
                b[0].0,
                b[0].1
            )),
            _ => Ok(()),
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
        return refuse();
    }
    println!(
        "{}: {} transformer, {} format",
        path.path.display(),
        d.family,
        d.format
    );
    for line in &d.lines {
        println!("  {line}");
    }
    println!(
        "  {:.3} M parameters, {:.1} MiB, dtypes {:?}",
        parameters as f64 / 1e6,
        bytes as f64 / 1048576.0,
        weights.dtype_counts(&d.prefix)
    );
    println!("  components: {}", components.join(", "));
    println!("  fingerprint {}", weights.fingerprint());
    if let Some(bad) = &bad {
        println!("  weights checked: {} tensor(s) with NaN or Inf", bad.len());
        for (name, n) in bad {
            println!("    {name}: {n} non-finite values");
        }
    }
    refuse()
}
