// y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]): nn.Linear layout, both operands K-contiguous.
// Register-blocked and fully unrolled: each invocation owns 8 rows x 8 columns. Per step of
// four k it loads 8 vec4 of x and 8 vec4 of w (as 2 mat4x4 whose columns are w rows), and
// `xv * wm` gives four dot products at once. Named accumulators instead of arrays keep
// everything in registers on compilers that do not promote private arrays. Rows and columns
// past the edge are clamped on load and skipped on store: no branches in the inner loop.
// Operands, parameters and `store_one` come from linear_io.wgsl.

fn store(m: u32, n0: u32, v: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        store_one(m, n0 + j, v[j]);
    }
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 8u;
    let m0 = gid.y * 8u;
    if (n0 >= p.n || m0 >= p.m) {
        return;
    }
    let last_m = p.m - 1u;
    let last_n = p.n - 1u;
    let xr0 = min(m0 + 0u, last_m) * p.k4;
    let xr1 = min(m0 + 1u, last_m) * p.k4;
    let xr2 = min(m0 + 2u, last_m) * p.k4;
    let xr3 = min(m0 + 3u, last_m) * p.k4;
    let xr4 = min(m0 + 4u, last_m) * p.k4;
    let xr5 = min(m0 + 5u, last_m) * p.k4;
    let xr6 = min(m0 + 6u, last_m) * p.k4;
    let xr7 = min(m0 + 7u, last_m) * p.k4;
    let wr0 = min(n0 + 0u, last_n) * p.k4;
    let wr1 = min(n0 + 1u, last_n) * p.k4;
    let wr2 = min(n0 + 2u, last_n) * p.k4;
    let wr3 = min(n0 + 3u, last_n) * p.k4;
    let wr4 = min(n0 + 4u, last_n) * p.k4;
    let wr5 = min(n0 + 5u, last_n) * p.k4;
    let wr6 = min(n0 + 6u, last_n) * p.k4;
    let wr7 = min(n0 + 7u, last_n) * p.k4;
    var acc0_0 = vec4<f32>(0.0);
    var acc0_1 = vec4<f32>(0.0);
    var acc1_0 = vec4<f32>(0.0);
    var acc1_1 = vec4<f32>(0.0);
    var acc2_0 = vec4<f32>(0.0);
    var acc2_1 = vec4<f32>(0.0);
    var acc3_0 = vec4<f32>(0.0);
    var acc3_1 = vec4<f32>(0.0);
    var acc4_0 = vec4<f32>(0.0);
    var acc4_1 = vec4<f32>(0.0);
    var acc5_0 = vec4<f32>(0.0);
    var acc5_1 = vec4<f32>(0.0);
    var acc6_0 = vec4<f32>(0.0);
    var acc6_1 = vec4<f32>(0.0);
    var acc7_0 = vec4<f32>(0.0);
    var acc7_1 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k4; k++) {
        let wm0 = mat4x4<f32>(w_vec4(wr0 + k), w_vec4(wr1 + k), w_vec4(wr2 + k), w_vec4(wr3 + k));
        let wm1 = mat4x4<f32>(w_vec4(wr4 + k), w_vec4(wr5 + k), w_vec4(wr6 + k), w_vec4(wr7 + k));
        let xv0 = x[xr0 + k];
        acc0_0 += xv0 * wm0;
        acc0_1 += xv0 * wm1;
        let xv1 = x[xr1 + k];
        acc1_0 += xv1 * wm0;
        acc1_1 += xv1 * wm1;
        let xv2 = x[xr2 + k];
        acc2_0 += xv2 * wm0;
        acc2_1 += xv2 * wm1;
        let xv3 = x[xr3 + k];
        acc3_0 += xv3 * wm0;
        acc3_1 += xv3 * wm1;
        let xv4 = x[xr4 + k];
        acc4_0 += xv4 * wm0;
        acc4_1 += xv4 * wm1;
        let xv5 = x[xr5 + k];
        acc5_0 += xv5 * wm0;
        acc5_1 += xv5 * wm1;
        let xv6 = x[xr6 + k];
        acc6_0 += xv6 * wm0;
        acc6_1 += xv6 * wm1;
        let xv7 = x[xr7 + k];
        acc7_0 += xv7 * wm0;
        acc7_1 += xv7 * wm1;
    }
    store(m0 + 0u, n0 + 0u, acc0_0);
    store(m0 + 0u, n0 + 4u, acc0_1);
    store(m0 + 1u, n0 + 0u, acc1_0);
    store(m0 + 1u, n0 + 4u, acc1_1);
    store(m0 + 2u, n0 + 0u, acc2_0);
    store(m0 + 2u, n0 + 4u, acc2_1);
    store(m0 + 3u, n0 + 0u, acc3_0);
    store(m0 + 3u, n0 + 4u, acc3_1);
    store(m0 + 4u, n0 + 0u, acc4_0);
    store(m0 + 4u, n0 + 4u, acc4_1);
    store(m0 + 5u, n0 + 0u, acc5_0);
    store(m0 + 5u, n0 + 4u, acc5_1);
    store(m0 + 6u, n0 + 0u, acc6_0);
    store(m0 + 6u, n0 + 4u, acc6_1);
    store(m0 + 7u, n0 + 0u, acc7_0);
    store(m0 + 7u, n0 + 4u, acc7_1);
}
