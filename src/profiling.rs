//! Reports of what the profiler recorded during a run (`profile`, `generate --profile`):
//! per-kernel summaries against ceilings measured in the same run, and Chrome traces.

use std::path::Path;

use noiseshift_kernels::profile::{self as prof, KernelSummary, Timing};
use noiseshift_kernels::{Gpu, ceilings};

use crate::error::{Error, Result};
use crate::tensor_file::write_atomic;

/// Per-kernel summaries of everything the profiler recorded, with ceilings measured now.
pub fn summarize(
    gpu: &Gpu,
    trace: Option<&Path>,
) -> Result<(Vec<KernelSummary>, prof::Ceilings, Timing)> {
    gpu.finish()?;
    let records = gpu.profiler().take_records();
    let timing = gpu.profiler().timing();
    if let Some(path) = trace {
        let text = serde_json::to_string(&prof::chrome_trace(&records))
            .map_err(|e| Error::Failure(e.to_string()))?;
        write_atomic(path, text.as_bytes())?;
        eprintln!(
            "wrote trace {} ({} dispatches)",
            path.display(),
            records.len()
        );
    }
    let ceilings = ceilings::measure(gpu)?;
    Ok((prof::summarize(&records, ceilings), ceilings, timing))
}

/// Print the per-kernel table of what the profiler recorded (and write the trace).
pub fn report_run(gpu: &Gpu, table: bool, trace: Option<&Path>) -> Result<()> {
    let (summaries, ceilings, timing) = summarize(gpu, trace)?;
    if table {
        let how = match timing {
            Timing::Timestamps => "GPU timestamp queries",
            Timing::WallClock => {
                "wall time per dispatch (no timestamp queries, or untrusted ones on a software adapter)"
            }
        };
        println!("{} — times from {how}", gpu.adapter.label());
        println!(
            "ceilings measured now: {:.1} GFLOP/s (FMA kernel), {:.1} GB/s (copy kernel)",
            ceilings.gflops, ceilings.gbps
        );
        print!("{}", prof::table(&summaries));
    }
    Ok(())
}
