// adaLN modulation y = x * (1 + scale) + shift, with shift and scale chunks of a per-sample
// modulation row broadcast over that sample's `tokens` rows. Widths and offsets count Elem
// (elem_*.wgsl). Each invocation walks one column down R rows, loading the sample's shift and
// scale once rather than per row.

struct Params {
    rows: u32,
    cols: u32,
    tokens: u32,
    mod_stride: u32,
    shift_off: u32,
    scale_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> modv: array<Elem>;
@group(0) @binding(3) var<storage, read_write> y: array<Elem>;

const R: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) {
        return;
    }
    let first = (wid.y + wid.z * groups.y) * R;
    // Rows find their sample by counting, not dividing: a division per row cost 20 % here on
    // llvmpipe. `sample` is the one whose values load at row `next`.
    var sample = first / p.tokens;
    var next = first;
    var scale = Elem(0.0);
    var shift = Elem(0.0);
    for (var row = first; row < min(first + R, p.rows); row++) {
        if (row == next) {
            let m = sample * p.mod_stride + c;
            scale = 1.0 + modv[m + p.scale_off];
            shift = modv[m + p.shift_off];
            sample += 1u;
            next = sample * p.tokens;
        }
        let i = row * p.cols + c;
        y[i] = x[i] * scale + shift;
    }
}
