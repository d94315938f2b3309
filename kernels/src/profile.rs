//! Per-dispatch profiler: GPU timestamps when the adapter has them, else wall time around a
//! dispatch that is submitted and waited for on its own. Aggregates per kernel, writes a
//! Chrome trace (Perfetto opens it) and JSON records.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::{KernelError, Result};

/// Work done by one dispatch, for GFLOP/s and GB/s.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

impl Cost {
    pub fn new(flops: f64, bytes: f64) -> Cost {
        Cost { flops, bytes }
    }
}

/// One timed dispatch.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub name: &'static str,
    pub flops: f64,
    pub bytes: f64,
    /// Start relative to the first record of the session, microseconds.
    pub start_us: f64,
    pub dur_us: f64,
}

/// How the times were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Timing {
    /// GPU timestamp queries around each dispatch.
    Timestamps,
    /// Wall time of each dispatch submitted and waited for alone (includes submit overhead).
    WallClock,
}

const QUERY_CAPACITY: u32 = 2048;

struct Queries {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

pub struct Profiler {
    enabled: bool,
    queries: Option<Queries>,
    /// Dispatches whose timestamps are written but not read back yet.
    pending: Vec<(&'static str, Cost)>,
    /// Waiting for the submitted resolve to be read.
    submitted: Vec<(&'static str, Cost)>,
    records: Vec<Record>,
    origin_ticks: Option<u64>,
    wall_origin: Option<std::time::Instant>,
}

impl Profiler {
    pub(crate) fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        timestamps: bool,
        enabled: bool,
    ) -> Profiler {
        let queries = timestamps.then(|| {
            let bytes = u64::from(QUERY_CAPACITY) * 8;
            Queries {
                set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profiler"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERY_CAPACITY,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profiler resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profiler readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                period_ns: f64::from(queue.get_timestamp_period()),
            }
        });
        Profiler {
            enabled,
            queries,
            pending: Vec::new(),
            submitted: Vec::new(),
            records: Vec::new(),
            origin_ticks: None,
            wall_origin: None,
        }
    }

    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn timing(&self) -> Timing {
        if self.queries.is_some() {
            Timing::Timestamps
        } else {
            Timing::WallClock
        }
    }

    /// Take the records gathered so far (call after `Gpu::finish`).
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    pub(crate) fn needs_wall_time(&self) -> bool {
        self.enabled && self.queries.is_none()
    }

    pub(crate) fn query_set_full(&self) -> bool {
        self.enabled && (self.pending.len() as u32 + 1) * 2 > QUERY_CAPACITY
    }

    pub(crate) fn has_unresolved(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Timestamp writes for the next dispatch, when profiling with queries.
    pub(crate) fn timestamp_writes(
        &mut self,
        name: &'static str,
        cost: Cost,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        if !self.enabled {
            return None;
        }
        let q = self.queries.as_ref()?;
        let i = self.pending.len() as u32 * 2;
        self.pending.push((name, cost));
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &q.set,
            beginning_of_pass_write_index: Some(i),
            end_of_pass_write_index: Some(i + 1),
        })
    }

    /// Append the query resolve to the encoder about to be submitted.
    pub(crate) fn resolve(&mut self, encoder: &mut wgpu::CommandEncoder) {
        let Some(q) = &self.queries else { return };
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len() as u32 * 2;
        encoder.resolve_query_set(&q.set, 0..n, &q.resolve, 0);
        encoder.copy_buffer_to_buffer(&q.resolve, 0, &q.readback, 0, u64::from(n) * 8);
        self.submitted = std::mem::take(&mut self.pending);
    }

    /// Read the timestamps of the submission just made (blocks; profiling only).
    pub(crate) fn after_submit(&mut self, device: &wgpu::Device) -> Result<()> {
        let Some(q) = &self.queries else {
            return Ok(());
        };
        if self.submitted.is_empty() {
            return Ok(());
        }
        let n = self.submitted.len() as u64 * 2;
        let (tx, rx) = std::sync::mpsc::channel();
        q.readback
            .map_async(wgpu::MapMode::Read, 0..n * 8, move |r| {
                let _ = tx.send(r);
            });
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| KernelError::Device(e.to_string()))?;
        rx.recv()
            .map_err(|e| KernelError::Device(e.to_string()))?
            .map_err(|e| KernelError::Device(format!("timestamp readback: {e}")))?;
        let ticks: Vec<u64> = {
            let view = q
                .readback
                .get_mapped_range(0..n * 8)
                .map_err(|e| KernelError::Device(format!("timestamp readback: {e:?}")))?;
            bytemuck::cast_slice(&view).to_vec()
        };
        q.readback.unmap();
        let period = q.period_ns;
        for (i, (name, cost)) in std::mem::take(&mut self.submitted).into_iter().enumerate() {
            let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1]);
            let origin = *self.origin_ticks.get_or_insert(t0);
            self.records.push(Record {
                name,
                flops: cost.flops,
                bytes: cost.bytes,
                start_us: t0.saturating_sub(origin) as f64 * period / 1e3,
                dur_us: t1.saturating_sub(t0) as f64 * period / 1e3,
            });
        }
        Ok(())
    }

    pub(crate) fn record_wall(&mut self, name: &'static str, cost: Cost, elapsed: Duration) {
        let origin = *self.wall_origin.get_or_insert_with(std::time::Instant::now);
        let end_us = origin.elapsed().as_secs_f64() * 1e6;
        let dur_us = elapsed.as_secs_f64() * 1e6;
        self.records.push(Record {
            name,
            flops: cost.flops,
            bytes: cost.bytes,
            start_us: (end_us - dur_us).max(0.0),
            dur_us,
        });
    }
}

/// Device ceilings measured in the same run, for the fraction-of-peak columns.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Ceilings {
    /// FMA-bound kernel, GFLOP/s.
    pub gflops: f64,
    /// Copy kernel, GB/s (bytes read + written).
    pub gbps: f64,
}

/// Per-kernel totals.
#[derive(Clone, Debug, Serialize)]
pub struct KernelSummary {
    pub name: &'static str,
    pub dispatches: usize,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub gflops: f64,
    pub gbps: f64,
    /// The larger of compute and bandwidth use, as a fraction of the measured ceilings.
    pub ceiling_fraction: f64,
}

pub fn summarize(records: &[Record], ceilings: Ceilings) -> Vec<KernelSummary> {
    let mut by_name: BTreeMap<&'static str, (usize, f64, f64, f64)> = BTreeMap::new();
    for r in records {
        let e = by_name.entry(r.name).or_default();
        e.0 += 1;
        e.1 += r.dur_us;
        e.2 += r.flops;
        e.3 += r.bytes;
    }
    let mut out: Vec<KernelSummary> = by_name
        .into_iter()
        .map(|(name, (n, us, flops, bytes))| {
            let secs = (us * 1e-6).max(1e-12);
            let gflops = flops / secs / 1e9;
            let gbps = bytes / secs / 1e9;
            let frac_c = if ceilings.gflops > 0.0 {
                gflops / ceilings.gflops
            } else {
                0.0
            };
            let frac_m = if ceilings.gbps > 0.0 {
                gbps / ceilings.gbps
            } else {
                0.0
            };
            KernelSummary {
                name,
                dispatches: n,
                total_ms: us / 1e3,
                mean_ms: us / 1e3 / n as f64,
                gflops,
                gbps,
                ceiling_fraction: frac_c.max(frac_m),
            }
        })
        .collect();
    out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    out
}

/// A plain-text table of the summaries.
pub fn table(summaries: &[KernelSummary]) -> String {
    let mut s = format!(
        "{:<28} {:>10} {:>11} {:>10} {:>9} {:>9} {:>9}\n",
        "kernel", "dispatches", "total ms", "mean ms", "GFLOP/s", "GB/s", "ceiling"
    );
    let total: f64 = summaries.iter().map(|k| k.total_ms).sum();
    for k in summaries {
        s.push_str(&format!(
            "{:<28} {:>10} {:>11.3} {:>10.4} {:>9.2} {:>9.2} {:>8.1}%\n",
            k.name,
            k.dispatches,
            k.total_ms,
            k.mean_ms,
            k.gflops,
            k.gbps,
            100.0 * k.ceiling_fraction
        ));
    }
    s.push_str(&format!("{:<28} {:>10} {:>11.3}\n", "total", "", total));
    s
}

/// Chrome trace JSON ("traceEvents" of complete events), one track per kernel name.
pub fn chrome_trace(records: &[Record]) -> serde_json::Value {
    let events: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name, "cat": "kernel", "ph": "X", "pid": 1, "tid": 1,
                "ts": r.start_us, "dur": r.dur_us,
                "args": { "gflop": r.flops / 1e9, "mbytes": r.bytes / 1e6 }
            })
        })
        .collect();
    serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_sums_per_kernel() {
        let rec = |name, dur_us, flops, bytes| Record {
            name,
            flops,
            bytes,
            start_us: 0.0,
            dur_us,
        };
        let records = vec![
            rec("a", 1000.0, 2e9, 0.0),
            rec("a", 1000.0, 2e9, 0.0),
            rec("b", 500.0, 0.0, 1e9),
        ];
        let s = summarize(
            &records,
            Ceilings {
                gflops: 4000.0,
                gbps: 4000.0,
            },
        );
        let a = s.iter().find(|k| k.name == "a").unwrap();
        assert_eq!(a.dispatches, 2);
        assert!((a.total_ms - 2.0).abs() < 1e-9);
        assert!((a.gflops - 2000.0).abs() < 1e-6);
        assert!((a.ceiling_fraction - 0.5).abs() < 1e-9);
        let b = s.iter().find(|k| k.name == "b").unwrap();
        assert!((b.gbps - 2000.0).abs() < 1e-6);
        let trace = chrome_trace(&records);
        assert_eq!(trace["traceEvents"].as_array().unwrap().len(), 3);
    }
}
