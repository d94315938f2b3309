// Row softmax in place: x[r, :] = softmax(scale * x[r, :]). One workgroup of WG invocations per
// row; each keeps a running (max, sum of exp relative to it) over its strided elements, merged
// over the workgroup in a fixed tree order; then each writes its elements. x is read twice.

struct Params {
    // Rows of this dispatch, row length, scale.
    rows: u32,
    cols: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

// (max, sum of exp(v - max)); an empty set is (-inf, 0).
var<workgroup> partial: array<vec2<f32>, WG>;

fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    if (m == -bitcast<f32>(0x7f800000u)) {
        return a;
    }
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * groups.x;
    // Uniform over the workgroup: the whole group leaves before any barrier.
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var acc = vec2<f32>(-bitcast<f32>(0x7f800000u), 0.0);
    for (var i = lid; i < p.cols; i += WG) {
        acc = merge(acc, vec2<f32>(x[base + i] * p.scale, 1.0));
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] = merge(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    let inv = 1.0 / total.y;
    for (var i = lid; i < p.cols; i += WG) {
        x[base + i] = exp(x[base + i] * p.scale - total.x) * inv;
    }
}
