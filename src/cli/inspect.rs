//! `noiseshift inspect MODEL`: what a model path holds, read from headers only (no GPU needed).

use std::path::PathBuf;

use serde_json::json;

use crate::error::{Result, input};
use crate::models::mmdit::MmditConfig;
use crate::weights::WeightSet;

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers pipeline folder, a transformer folder (config.json + safetensors), a
    /// single-file checkpoint, or `builtin` (the default: the small model inside this program).
    model: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
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

pub fn run(args: Args) -> Result<()> {
    let path = crate::builtin::resolve(args.model.as_deref())?;
    let weights = WeightSet::open(&path.transformer_files)?;
    let (config, format) = MmditConfig::resolve(&weights, path.config.as_ref())?;
    let (parameters, bytes) = weights.totals(format.prefix());
    let components: Vec<&str> = path.components(&weights).iter().map(|c| c.name()).collect();
    let report = json!({
        "path": path.path,
        "name": path.name(),
        "family": config.family(),
        "format": format.name(),
        "config_source": config.source,
        "depth": config.depth,
        "hidden": config.hidden,
        "heads": config.heads,
        "head_dim": config.head_dim,
        "patch_size": config.patch,
        "in_channels": config.in_channels,
        "joint_attention_dim": config.joint_attention_dim,
        "pooled_projection_dim": config.pooled_dim,
        "pos_embed_max_size": config.pos_embed_max_size,
        "qk_norm": config.qk_norm,
        "dual_attention_layers": config.dual_attention_layers,
        "parameters": parameters,
        "bytes": bytes,
        "dtypes": weights.dtype_counts(format.prefix()),
        "components": components,
        "files": weights.paths(),
        "fingerprint": weights.fingerprint(),
        "scheduler_shift": path.scheduler_shift,
    });
    let bad = if args.check {
        Some(non_finite(&weights)?)
    } else {
        None
    };
    let mut report = report;
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
        config.family(),
        format.name()
    );
    println!(
        "  depth {}, hidden {}, {} heads x {}, patch {}, {} latent channels",
        config.depth,
        config.hidden,
        config.heads,
        config.head_dim,
        config.patch,
        config.in_channels
    );
    println!(
        "  position grid {0}x{0} (up to {1}x{1} px), qk norm: {2}, dual attention layers: {3:?}",
        config.pos_embed_max_size,
        config.pos_embed_max_size * config.patch * 8,
        if config.qk_norm { "RMSNorm" } else { "none" },
        config.dual_attention_layers
    );
    println!(
        "  text: joint attention dim {}, pooled dim {}",
        config.joint_attention_dim, config.pooled_dim
    );
    println!("  config: {}", config.source);
    println!(
        "  {:.3} M parameters, {:.1} MiB, dtypes {:?}",
        parameters as f64 / 1e6,
        bytes as f64 / 1048576.0,
        weights.dtype_counts(format.prefix())
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
