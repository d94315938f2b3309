//! `noiseshift devices`: the adapters wgpu finds, the features we use and the limits that bound us.

use noiseshift_kernels::{KernelError, list_adapters};

use crate::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let adapters = list_adapters();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&adapters).expect("serialisable")
        );
    }
    if adapters.is_empty() {
        return Err(KernelError::NoAdapter(
            "no GPU adapter found: install your GPU's Vulkan, Metal or DX12 driver, or on Linux Mesa's software \
             drivers (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)"
                .into(),
        )
        .into());
    }
    if args.json {
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for a in &adapters {
        let yes = |b: bool| if b { "yes" } else { "no" };
        println!(
            "{}: {} [{}]{}",
            a.index,
            a.name,
            a.backend,
            if a.index == 0 { "  (default)" } else { "" }
        );
        println!(
            "   type {}, driver {} {}",
            a.device_type, a.driver, a.driver_info
        );
        let subgroup = match (a.subgroup, a.subgroup_min_size, a.subgroup_max_size) {
            (false, _, _) => "no".to_string(),
            (true, lo, hi) if lo == hi => format!("yes ({lo} lanes)"),
            (true, lo, hi) => format!("yes ({lo}-{hi} lanes)"),
        };
        println!(
            "   SHADER_F16 {}  SUBGROUP {}  TIMESTAMP_QUERY {}  COOPERATIVE_MATRIX {}",
            yes(a.shader_f16),
            subgroup,
            yes(a.timestamp_query),
            yes(a.cooperative_matrix)
        );
        println!(
            "   max buffer {:.0} MiB, max storage binding {:.0} MiB, workgroup storage {} KiB, {} invocations/workgroup",
            mib(a.max_buffer_size),
            mib(a.max_storage_buffer_binding_size),
            a.max_compute_workgroup_storage_size / 1024,
            a.max_compute_invocations_per_workgroup
        );
        if let Some(bytes) = a.device_memory {
            println!(
                "   device memory {:.1} GiB",
                bytes as f64 / (1u64 << 30) as f64
            );
        }
    }
    Ok(())
}
