// Sum over a workgroup of WG invocations (a power of two the op defines, see
// `ops::reduction_width`) in a fixed tree order, so results are deterministic.

var<workgroup> partial: array<f32, WG>;

// Every invocation of the workgroup must call this (it contains barriers).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
