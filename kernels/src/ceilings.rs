//! Device ceilings measured in the same run as the numbers they are compared with: an
//! FMA-bound kernel (GFLOP/s) and a copy kernel (GB/s, bytes read plus written).

use crate::context::Gpu;
use crate::error::Result;
use crate::ops::{grid_flat, words};
use crate::pipelines::Kernel;
use crate::profile::{Ceilings, Cost, Record};
use crate::tensor::{DType, Tensor};

/// Each measurement grows its work until one dispatch takes at least this long.
const MIN_SECONDS: f64 = 0.1;

/// Time `run` (which records one dispatch) with the profiler, best of three.
fn best_seconds(gpu: &Gpu, run: &dyn Fn() -> Result<()>) -> Result<f64> {
    let was = gpu.profiler().enabled();
    gpu.profiler().set_enabled(true);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        run()?;
        gpu.finish()?;
        let records: Vec<Record> = gpu.profiler().take_records();
        let total: f64 = records.iter().map(|r| r.dur_us).sum();
        best = best.min(total * 1e-6);
    }
    gpu.profiler().set_enabled(was);
    Ok(best)
}

/// Measure both ceilings (takes well under a second on real GPUs, a few seconds in software).
/// Records gathered before the call should be taken first; the profiler's state is restored.
pub fn measure(gpu: &Gpu) -> Result<Ceilings> {
    // Compute: grow the number of workgroups until they fill any GPU (2M invocations, a 32 MiB
    // output within every adapter's limits), then the iterations, until the kernel runs long
    // enough to time.
    const MAX_GROUPS: usize = 1 << 15;
    let mut iters = 256u32;
    let mut groups = 256usize;
    let gflops = loop {
        let out = Tensor::empty(gpu, &[groups * 64 * 4], DType::F32)?;
        let flops = (groups * 64) as f64 * f64::from(iters) * 64.0;
        let kernel = Kernel::new("peak_fma", &["peak_fma.wgsl"]);
        let secs = best_seconds(gpu, &|| {
            gpu.dispatch(
                &kernel,
                words(&[iters, 0.5f32.to_bits()]),
                &[out.bind("out")],
                [groups as u32, 1, 1],
                Cost::new(flops, 0.0),
            )
        })?;
        if secs >= MIN_SECONDS || iters >= 1 << 20 {
            break flops / secs / 1e9;
        }
        if groups < MAX_GROUPS {
            groups = (groups * 8).min(MAX_GROUPS);
        } else {
            iters *= 8;
        }
    };
    // Bandwidth: copy as much as one binding allows, up to 256 MiB.
    let bytes = gpu.max_binding().min(256 << 20) / 16 * 16;
    let n4 = (bytes / 16) as usize;
    let x = Tensor::empty(gpu, &[n4 * 4], DType::F32)?;
    let y = Tensor::empty(gpu, &[n4 * 4], DType::F32)?;
    let kernel = Kernel::new("copy", &["common.wgsl", "copy.wgsl"]);
    let secs = best_seconds(gpu, &|| {
        gpu.dispatch(
            &kernel,
            words(&[n4 as u32]),
            &[x.bind("x"), y.bind("y")],
            grid_flat(gpu, n4),
            Cost::new(0.0, 2.0 * bytes as f64),
        )
    })?;
    Ok(Ceilings {
        gflops,
        gbps: 2.0 * bytes as f64 / secs / 1e9,
    })
}
