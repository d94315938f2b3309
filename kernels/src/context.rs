//! The device context: adapter discovery and choice, the features and limits we use, and the
//! command recorder every op appends its dispatches to.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use wgpu::util::DeviceExt;

use crate::caps::{Caps, Forced, Variant};
use crate::error::{KernelError, Result};
use crate::pipelines::{Kernel, Pipelines};
use crate::pool::Pool;
use crate::profile::{Cost, Profiler};

/// Environment variable that picks the adapter when `--device` is not given.
pub const DEVICE_ENV: &str = "NOISESHIFT_DEVICE";

/// What `noiseshift devices` reports about one adapter.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub shader_f16: bool,
    pub subgroup: bool,
    /// Lanes per subgroup, fewest and most (meaningful where `subgroup`).
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub timestamp_query: bool,
    pub cooperative_matrix: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    /// Device-local memory in bytes, where the backend tells (Vulkan heaps); None elsewhere.
    pub device_memory: Option<u64>,
}

/// The largest device-local memory heap of a Vulkan adapter (wgpu has no portable query).
#[cfg(not(any(target_vendor = "apple", target_arch = "wasm32")))]
fn device_memory(adapter: &wgpu::Adapter) -> Option<u64> {
    // SAFETY: the HAL adapter is only borrowed to read the physical device's memory
    // properties; nothing is created or changed.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: the physical device belongs to this live instance.
    let props =
        unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
    // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT = 1.
    props.memory_heaps[..props.memory_heap_count as usize]
        .iter()
        .filter(|h| h.flags.as_raw() & 1 != 0)
        .map(|h| h.size)
        .max()
}

#[cfg(any(target_vendor = "apple", target_arch = "wasm32"))]
fn device_memory(_: &wgpu::Adapter) -> Option<u64> {
    None
}

impl AdapterReport {
    fn new(index: usize, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let f = adapter.features();
        let l = adapter.limits();
        AdapterReport {
            index,
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver,
            driver_info: info.driver_info,
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroup: f.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix: f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            max_buffer_size: l.max_buffer_size,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            device_memory: device_memory(adapter),
        }
    }

    /// The label `--device NAME` is matched against: "name [backend]".
    pub fn label(&self) -> String {
        format!("{} [{}]", self.name, self.backend)
    }

    /// Whether a device selector (trimmed) names this adapter: its index, or a fragment of its
    /// label in any case.
    fn matches(&self, selector: &str) -> bool {
        match selector.parse::<usize>() {
            Ok(i) => i == self.index,
            Err(_) => self
                .label()
                .to_lowercase()
                .contains(&selector.to_lowercase()),
        }
    }
}

/// How to pick and set up the device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Adapter index (as listed by `noiseshift devices`) or a case-insensitive part of
    /// "name [backend]". `None` reads [`DEVICE_ENV`], then takes the best adapter.
    pub device: Option<String>,
    /// Lower the storage-binding limit below the adapter's (tests of the split/refuse paths).
    pub max_binding_bytes: Option<u64>,
    /// Lower the buffer-size limit below the adapter's (tests of the too-large paths).
    pub max_buffer_bytes: Option<u64>,
    /// Record per-dispatch timings from the start.
    pub profile: bool,
}

/// Whether `adapter` multiplies 16 x 16 x 16 cooperative matrices of f16 into f32, on subgroups
/// exactly 32 wide (linear_coop.wgsl's layout).
fn coop_f16(adapter: &wgpu::Adapter) -> bool {
    let info = adapter.get_info();
    adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
        && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
        && adapter.cooperative_matrix_properties().iter().any(|c| {
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        })
}

/// A texture side of at least `len` texels that is not a power of two, where `max` allows.
/// llvmpipe compiles a kernel once per pattern of power-of-two and other sides among the
/// textures it reads (a fast path for wrapping coordinates), about 11 s for an unrolled matmul;
/// a spare texel row or column keeps every shape on one compiled variant.
pub(crate) fn texture_side(len: u32, max: u32) -> u32 {
    let mut side = len;
    while side.is_power_of_two() && side < max {
        side += 1;
    }
    side
}

fn instance() -> wgpu::Instance {
    // Mesa's software Vulkan prints a harmless XDG_RUNTIME_DIR complaint from its device-select
    // layer; that layer is of no use to us.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: set before any thread of ours exists; wgpu has not started yet.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

fn rank(adapter: &wgpu::Adapter) -> (u8, u8) {
    let info = adapter.get_info();
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, backend)
}

/// All adapters, best first: discrete, integrated, virtual, other, software; native APIs before GL.
fn sorted_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(rank);
    adapters
}

const NO_ADAPTER_HELP: &str = "no GPU adapter found: install your GPU's Vulkan, Metal or DX12 driver, \
     or on Linux Mesa's software drivers (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)";

/// Every adapter wgpu finds, in the order `--device INDEX` counts them.
pub fn list_adapters() -> Vec<AdapterReport> {
    let instance = instance();
    sorted_adapters(&instance)
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterReport::new(i, a))
        .collect()
}

/// The adapters the tests run on: every one, or those that `NOISESHIFT_TEST_ADAPTERS` names
/// (comma-separated indices or name fragments) on machines where one cannot be opened, such as
/// wgpu's GL backend on NVIDIA's driver ("Parent device is lost").
pub fn test_adapters() -> Vec<AdapterReport> {
    let all = list_adapters();
    let Ok(wanted) = std::env::var("NOISESHIFT_TEST_ADAPTERS") else {
        return all;
    };
    all.into_iter()
        .filter(|a| wanted.split(',').any(|w| a.matches(w.trim())))
        .collect()
}

/// Pick an adapter by index or name fragment, or the best one; returns its index too.
fn choose(adapters: Vec<wgpu::Adapter>, selector: Option<&str>) -> Result<(usize, wgpu::Adapter)> {
    if adapters.is_empty() {
        return Err(KernelError::NoAdapter(NO_ADAPTER_HELP.into()));
    }
    let Some(sel) = selector.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok((0, adapters.into_iter().next().expect("not empty")));
    };
    let reports: Vec<AdapterReport> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterReport::new(i, a))
        .collect();
    match reports.iter().position(|r| r.matches(sel)) {
        Some(i) => Ok((i, adapters.into_iter().nth(i).expect("index checked"))),
        None => {
            let list: Vec<String> = reports
                .iter()
                .map(|r| format!("  {}: {}", r.index, r.label()))
                .collect();
            Err(KernelError::NoAdapter(format!(
                "no adapter matches device '{sel}'; available:\n{}",
                list.join("\n")
            )))
        }
    }
}

/// The command encoder being filled, submitted when results are needed.
#[derive(Default)]
struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: usize,
}

/// Submit automatically after this many dispatches so command memory stays bounded.
const DISPATCHES_PER_SUBMIT: usize = 512;

/// One bound resource of a dispatch, in binding order after the uniform parameters.
#[derive(Clone, Copy)]
pub enum Bind<'a> {
    /// A byte range of a storage buffer; `label` names the operand in errors.
    Buffer {
        buffer: &'a wgpu::Buffer,
        offset: u64,
        size: u64,
        label: &'a str,
    },
    /// A storage texture: read-only by the matmul, norm and attention kernels, written by a pack
    /// kernel.
    Texture(&'a wgpu::TextureView),
}

/// The GPU: device, queue, capabilities, pipeline cache, buffer pool and profiler.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterReport,
    pub caps: Caps,
    pub limits: wgpu::Limits,
    pipelines: Pipelines,
    pub(crate) pool: Pool,
    recorder: RefCell<Recorder>,
    profiler: RefCell<Profiler>,
    errors: Arc<Mutex<Vec<String>>>,
    poison: Cell<bool>,
    /// Bytes written through the queue since the last submission (see `note_upload`).
    staged: Cell<u64>,
    /// Bound where a kernel's optional operand (a bias) is absent; never read.
    unused: wgpu::Buffer,
    /// Reusable rgba32float textures the texture kernels read activations from, by slot.
    scratch: RefCell<Vec<Option<ScratchTexture>>>,
    /// Kernel variants forced in place of the adapter's defaults.
    forced: Forced,
}

/// A cached scratch texture: its size, the texture (for copies) and its view (for bindings).
type ScratchTexture = (u32, u32, wgpu::Texture, wgpu::TextureView);

/// Scratch texture slots. `Packed` textures are written by pack kernels; `Copied` and `Flat`
/// ones are filled by buffer-to-texture copies. `Flat` has its own slot so that its wide rows
/// do not widen the `Copied` texture of every matmul.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scratch {
    Packed = 0,
    Copied = 1,
    Keys = 2,
    Values = 3,
    Flat = 4,
}

impl Gpu {
    /// Open the chosen adapter with the features we use and the adapter's full limits.
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        let instance = instance();
        let env = std::env::var(DEVICE_ENV).ok();
        let selector = options.device.as_deref().or(env.as_deref());
        let adapters = sorted_adapters(&instance);
        let reports: Vec<AdapterReport> = adapters
            .iter()
            .enumerate()
            .map(|(i, a)| AdapterReport::new(i, a))
            .collect();
        let (index, adapter) = choose(adapters, selector)?;
        let report = reports
            .into_iter()
            .nth(index)
            .expect("chosen adapter is listed");

        let coop = coop_f16(&adapter);
        let mut wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        if coop {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let features = adapter.features() & wanted;
        let mut limits = adapter.limits();
        if let Some(max) = options.max_binding_bytes {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(max);
        }
        if let Some(max) = options.max_buffer_bytes {
            limits.max_buffer_size = limits.max_buffer_size.min(max);
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(max);
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("noiseshift"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: the only experimental feature asked for is cooperative matrices, used by
            // linear_coop.wgsl alone, within the configuration checked by `coop_f16`.
            experimental_features: if coop {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            ..Default::default()
        }))
        .map_err(|e| KernelError::Device(format!("cannot open {}: {e}", report.label())))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().expect("error sink").push(e.to_string());
        }));
        // A lost device (driver reset, GPU removed, out of memory at the driver) is reported by
        // the next flush or finish like any other asynchronous error, not as a panic.
        let lost = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut sink = lost.lock().unwrap_or_else(|p| p.into_inner());
            sink.push(format!("the GPU device was lost ({reason:?}): {message}"));
        });

        let info = adapter.get_info();
        let software = info.device_type == wgpu::DeviceType::Cpu;
        let subgroup_width = (features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == info.subgroup_max_size)
            .then_some(info.subgroup_min_size);
        let caps = Caps {
            f16: features.contains(wgpu::Features::SHADER_F16),
            // Mesa 22's lavapipe reports timestamps, but once a pass has written a storage
            // texture its timestamps stop bracketing the work (seen: 0.1 ms stamped around a
            // 50 ms dispatch); software adapters are timed by wall clock instead.
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY) && !software,
            software,
            subgroup_width,
            coop_f16: coop,
        };
        let profiler = Profiler::new(&device, &queue, caps.timestamps, options.profile);
        Ok(Gpu {
            pipelines: Pipelines::default(),
            pool: Pool::default(),
            recorder: RefCell::new(Recorder::default()),
            profiler: RefCell::new(profiler),
            errors,
            poison: Cell::new(false),
            staged: Cell::new(0),
            scratch: RefCell::new(vec![None, None, None, None, None]),
            forced: Forced::default(),
            unused: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unused operand"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            device,
            queue,
            adapter: report,
            caps,
            limits,
        })
    }

    /// The kernel of op family `V` that runs here: the forced one, else the adapter's default.
    pub fn variant<V: Variant>(&self) -> V {
        self.forced
            .get::<V>()
            .unwrap_or_else(|| V::for_caps(&self.caps))
    }

    /// Run `V`'s kernel `v` from now on (tests and benches run every variant on one adapter);
    /// `None` goes back to the default.
    pub fn force_variant<V: Variant>(&self, v: Option<V>) {
        self.forced.set(v);
    }

    /// The pipeline for `kernel`, built and cached on first use.
    pub(crate) fn pipeline(&self, kernel: &Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipelines.get(self, kernel)
    }

    /// A binding for an optional operand that is absent (the kernel's flag says not to read it).
    pub(crate) fn unused(&self) -> Bind<'_> {
        Bind::Buffer {
            buffer: &self.unused,
            offset: 0,
            size: 16,
            label: "unused",
        }
    }

    /// A texture of at least width x height rgba32float texels for `slot`. Reused across
    /// dispatches: wgpu orders each write after the previous reader of the same texture.
    pub(crate) fn scratch_texture(
        &self,
        slot: Scratch,
        width: u32,
        height: u32,
    ) -> Result<(wgpu::Texture, wgpu::TextureView)> {
        let mut cache = self.scratch.borrow_mut();
        let entry = &mut cache[slot as usize];
        if let Some((w, h, tex, view)) = entry.as_ref()
            && *w >= width
            && *h >= height
        {
            return Ok((tex.clone(), view.clone()));
        }
        let max = self.limits.max_texture_dimension_2d;
        if width > max || height > max {
            return Err(KernelError::TooLarge {
                what: format!("a {width}x{height} scratch texture"),
                bytes: u64::from(width.max(height)),
                limit: u64::from(max),
                limit_name: "max_texture_dimension_2d",
            });
        }
        // Grow to cover the old size too (within the limit), so that alternating shapes do not
        // reallocate at every dispatch.
        let (w, h) = entry.as_ref().map_or((width, height), |(w, h, ..)| {
            ((*w).max(width).min(max), (*h).max(height).min(max))
        });
        let (w, h) = (texture_side(w, max), texture_side(h, max));
        // Kernels read every scratch texture as a read-only storage texture; each is filled by
        // copies or by a pack kernel's storage writes.
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("scratch"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage,
            view_formats: &[],
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(KernelError::Device(format!(
                "out of device memory for a {w}x{h} scratch texture: {e}"
            )));
        }
        let view = texture.create_view(&Default::default());
        *entry = Some((w, h, texture.clone(), view.clone()));
        Ok((texture, view))
    }

    /// Record a copy of `rows` rows from `offset` in `buffer` (a multiple of 16, the texel
    /// size), `row_bytes` apart (a multiple of 256 unless one row), into `width` texels of
    /// `texture`'s rows from `first_row` on.
    pub(crate) fn copy_to_texture(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        row_bytes: u32,
        [width, rows]: [u32; 2],
        first_row: u32,
        texture: &wgpu::Texture,
    ) {
        self.with_encoder(|enc| {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset,
                        bytes_per_row: Some(row_bytes),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: first_row,
                        z: 0,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width,
                    height: rows,
                    depth_or_array_layers: 1,
                },
            )
        });
    }

    /// Fill every newly handed-out tensor with NaN, so a kernel that leaves an output element
    /// unwritten fails its test instead of passing on stale zeros.
    pub fn set_poison(&self, on: bool) {
        self.poison.set(on);
    }

    pub(crate) fn poisoning(&self) -> bool {
        self.poison.get()
    }

    /// Start or stop recording per-dispatch timings; returns the profiler for reading.
    pub fn profiler(&self) -> std::cell::RefMut<'_, Profiler> {
        self.profiler.borrow_mut()
    }

    /// Largest byte range one storage binding may cover on this device.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// Check a binding size against the device limit.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding() {
            return Err(KernelError::TooLarge {
                what: what.to_string(),
                bytes,
                limit: self.max_binding(),
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(())
    }

    fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut rec = self.recorder.borrow_mut();
        let enc = rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        f(enc)
    }

    /// Record one compute dispatch. Binding 0 is the uniform `params`; `binds` follow from 1.
    pub(crate) fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u8],
        binds: &[Bind<'_>],
        groups: [u32; 3],
        cost: Cost,
    ) -> Result<()> {
        let max_groups = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max_groups) {
            return Err(KernelError::TooLarge {
                what: format!("{} dispatch of {groups:?} workgroups", kernel.name),
                bytes: u64::from(*groups.iter().max().expect("3 values")),
                limit: u64::from(max_groups),
                limit_name: "max_compute_workgroups_per_dimension",
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        for b in binds {
            if let Bind::Buffer {
                size,
                label,
                offset,
                ..
            } = b
            {
                self.check_binding(&format!("{} operand '{label}'", kernel.name), *size)?;
                debug_assert_eq!(
                    offset % u64::from(self.limits.min_storage_buffer_offset_alignment),
                    0,
                    "unaligned binding offset for {label}"
                );
            }
        }
        let pipeline = self.pipeline(kernel)?;
        let mut padded = params.to_vec();
        padded.resize(params.len().next_multiple_of(16).max(16), 0);
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &padded,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in binds.iter().enumerate() {
            let resource = match b {
                Bind::Buffer {
                    buffer,
                    offset,
                    size,
                    ..
                } => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: *offset,
                    size: wgpu::BufferSize::new(*size),
                }),
                Bind::Texture(view) => wgpu::BindingResource::TextureView(view),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource,
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });

        let mut profiler = self.profiler.borrow_mut();
        let wall = profiler.needs_wall_time().then(Instant::now);
        self.with_encoder(|enc| {
            let timestamps = profiler.timestamp_writes(kernel.name, cost);
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.name),
                timestamp_writes: timestamps,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
        let dispatches = {
            let mut rec = self.recorder.borrow_mut();
            rec.dispatches += 1;
            rec.dispatches
        };
        if let Some(start) = wall {
            drop(profiler);
            self.finish()?;
            self.profiler
                .borrow_mut()
                .record_wall(kernel.name, cost, start.elapsed());
        } else if dispatches >= DISPATCHES_PER_SUBMIT || profiler.query_set_full() {
            drop(profiler);
            self.flush()?;
        }
        Ok(())
    }

    /// Record a buffer-to-buffer copy in order with the dispatches around it.
    pub(crate) fn copy(
        &self,
        src: &wgpu::Buffer,
        src_off: u64,
        dst: &wgpu::Buffer,
        dst_off: u64,
        size: u64,
    ) {
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(src, src_off, dst, dst_off, size));
    }

    /// Write `data` into `buffer` at `offset`, ordered after everything recorded so far.
    pub(crate) fn upload(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        let pending = self.recorder.borrow().encoder.is_some();
        let len = data.len().next_multiple_of(4);
        if !pending {
            if len == data.len() {
                self.queue.write_buffer(buffer, offset, data);
            } else {
                let mut padded = data.to_vec();
                padded.resize(len, 0);
                self.queue.write_buffer(buffer, offset, &padded);
            }
            return self.note_upload(len as u64);
        }
        // queue.write_buffer would run before the pending commands; go through a staging copy.
        let mut padded = data.to_vec();
        padded.resize(len, 0);
        let staging = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("upload"),
                contents: &padded,
                usage: wgpu::BufferUsages::COPY_SRC,
            });
        self.copy(&staging, 0, buffer, offset, len as u64);
        Ok(())
    }

    /// Account for `bytes` written with `queue.write_*`. wgpu keeps such data in staging memory
    /// until the next submission completes, so loading a model without submitting would hold a
    /// second host copy of all its weights; submit and wait every 256 MiB instead.
    pub(crate) fn note_upload(&self, bytes: u64) -> Result<()> {
        let staged = self.staged.get() + bytes;
        if staged < 256 << 20 {
            self.staged.set(staged);
            return Ok(());
        }
        self.finish()
    }

    /// Submit what has been recorded without waiting for it.
    pub fn flush(&self) -> Result<()> {
        let encoder = {
            let mut rec = self.recorder.borrow_mut();
            rec.dispatches = 0;
            rec.encoder.take()
        };
        let mut profiler = self.profiler.borrow_mut();
        let mut encoder = match encoder {
            Some(e) => e,
            None if profiler.has_unresolved() => self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }),
            None => {
                // Queued writes are submitted with the next submission; make one.
                if self.staged.get() > 0 {
                    self.queue.submit(None);
                    self.staged.set(0);
                }
                return self.take_error();
            }
        };
        profiler.resolve(&mut encoder);
        self.queue.submit(Some(encoder.finish()));
        self.staged.set(0);
        profiler.after_submit(&self.device)?;
        drop(profiler);
        self.take_error()
    }

    /// Submit and wait until the device is idle.
    pub fn finish(&self) -> Result<()> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| KernelError::Device(e.to_string()))?;
        self.take_error()
    }

    /// Report (once) the first error the device raised asynchronously.
    fn take_error(&self) -> Result<()> {
        let mut errors = self.errors.lock().expect("error sink");
        if errors.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut *errors);
        Err(KernelError::Device(all.join("; ")))
    }

    /// Copy `size` bytes at `offset` of `buffer` back to the host.
    pub(crate) fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        let len = size.next_multiple_of(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: len.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if len > 0 {
            self.copy(buffer, offset, &staging, 0, len);
        }
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| KernelError::Device(e.to_string()))?;
        rx.recv()
            .map_err(|e| KernelError::Device(e.to_string()))?
            .map_err(|e| KernelError::Device(format!("readback failed: {e}")))?;
        self.take_error()?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| KernelError::Device(format!("readback failed: {e:?}")))?;
        let mut out = view.to_vec();
        out.truncate(size as usize);
        Ok(out)
    }

    /// Allocate a device buffer, turning out-of-memory into an error instead of a panic.
    pub(crate) fn create_buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        if size > self.limits.max_buffer_size {
            return Err(KernelError::TooLarge {
                what: format!("buffer '{label}'"),
                bytes: size,
                limit: self.limits.max_buffer_size,
                limit_name: "max_buffer_size",
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(KernelError::Device(format!(
                "out of device memory for '{label}' ({size} bytes): {e}"
            )));
        }
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_lists_the_available_ones() {
        let err = Gpu::new(&GpuOptions {
            device: Some("no-such-gpu-xyz".into()),
            ..Default::default()
        });
        match err {
            Err(KernelError::NoAdapter(msg)) => {
                assert!(msg.contains("no-such-gpu-xyz"), "{msg}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a nonexistent device was accepted"),
        }
    }

    #[test]
    fn index_selects_in_listed_order() {
        let last = test_adapters().pop().expect("an adapter to test on");
        let gpu = Gpu::new(&GpuOptions {
            device: Some(last.index.to_string()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(gpu.adapter.label(), last.label());
    }

    #[test]
    fn a_lost_device_is_an_error_not_a_panic() {
        for a in test_adapters() {
            let gpu = Gpu::new(&GpuOptions {
                device: Some(a.index.to_string()),
                ..Default::default()
            })
            .unwrap();
            let t = crate::Tensor::from_f32(&gpu, &[4], &[1.0; 4]).unwrap();
            gpu.device.destroy();
            let flushed = gpu.finish().and_then(|_| t.to_vec(&gpu).map(|_| ()));
            match flushed {
                Err(KernelError::Device(msg)) => {
                    assert!(msg.contains("lost"), "{}: {msg}", a.label())
                }
                other => panic!("{}: {other:?}", a.label()),
            }
        }
    }

    #[test]
    fn texture_sides_avoid_powers_of_two_within_the_limit() {
        let sides: Vec<u32> = [1, 2, 3, 4, 384, 1024, 16384]
            .iter()
            .map(|&n| texture_side(n, 16384))
            .collect();
        assert_eq!(sides, [3, 3, 3, 5, 384, 1025, 16384]);
    }
}
