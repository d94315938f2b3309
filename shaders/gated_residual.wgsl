// Gated residual x += gate * y in place, the gate a chunk of a per-sample modulation row
// broadcast over that sample's `tokens` rows. Widths and offsets count Elem (elem_*.wgsl);
// each invocation walks one column down R rows, loading the gate once per sample.

struct Params {
    rows: u32,
    cols: u32,
    tokens: u32,
    mod_stride: u32,
    gate_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<Elem>;
@group(0) @binding(2) var<storage, read> modv: array<Elem>;
@group(0) @binding(3) var<storage, read_write> x: array<Elem>;

const R: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) {
        return;
    }
    let first = (wid.y + wid.z * groups.y) * R;
    // The sample by counting, as in modulate.wgsl.
    var sample = first / p.tokens;
    var next = first;
    var gate = Elem(0.0);
    for (var row = first; row < min(first + R, p.rows); row++) {
        if (row == next) {
            gate = modv[sample * p.mod_stride + p.gate_off + c];
            sample += 1u;
            next = sample * p.tokens;
        }
        let i = row * p.cols + c;
        x[i] += gate * y[i];
    }
}
