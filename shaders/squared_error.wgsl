// Sum of squared differences per group of rows: out[g] = sum over rows r of group g and all
// columns of (a[r, c] - b[r mod rows_b, c])^2. b repeats over a's rows, so one target per
// sample serves every candidate. `cols` counts Elem (elem_*.wgsl). One workgroup per group;
// fixed summation order (see workgroup_sum.wgsl), so the result is deterministic.

struct Params {
    group_rows: u32,
    cols: u32,
    rows_b: u32,
    groups: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<Elem>;
@group(0) @binding(2) var<storage, read> b: array<Elem>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * ng.x;
    if (g >= p.groups) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < p.group_rows; r++) {
        let row = g * p.group_rows + r;
        let ab = row * p.cols;
        let bb = (row % p.rows_b) * p.cols;
        for (var c = lid; c < p.cols; c += WG) {
            let d = a[ab + c] - b[bb + c];
            s += hsum(d * d);
        }
    }
    let total = workgroup_sum(lid, s);
    if (lid == 0u) {
        out[g] = total;
    }
}
