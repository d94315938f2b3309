// y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]) on cooperative matrices (tensor cores), a first
// try for hardware GPUs with 16 x 16 x 16 f16 x f16 -> f32 products (wgpu's experimental
// cooperative-matrix feature; operands, parameters and `store_one` from linear_io.wgsl). Both
// operands are rounded to f16 when staged, so the result carries f16 input rounding (about
// 1e-3 relative) with f32 accumulation. A workgroup is four subgroups of 32 lanes and computes
// a 64 x 64 block of y; subgroup s owns the 32 x 32 quarter (s / 2, s % 2) as 2 x 2 fragments.
// Per step of 32 k the workgroup stages the block's 64 rows of x and of w in workgroup memory,
// [row][k]: x rows load as row-major A fragments, w rows as the columns of B. Each result
// fragment goes through a per-subgroup 16 x 16 f32 tile so that every lane applies bias and
// activation to its share. Rows and columns past the edge are clamped on load and skipped on
// store; k past the end loads zeros.
enable f16;
enable wgpu_cooperative_matrix;

const BLOCK: u32 = 64u;
// k per staged step, and its vec4.
const BK: u32 = 32u;
const BK4: u32 = 8u;

var<workgroup> xs: array<f16, 2048>;
var<workgroup> ws: array<f16, 2048>;
// One 16 x 16 result tile per subgroup.
var<workgroup> cs: array<f32, 1024>;

// Write fragment c of subgroup sg, whose first output is (m, n), through the staging tile.
fn store_fragment(c: coop_mat16x16<f32, C>, sg: u32, lane: u32, m: u32, n: u32) {
    coopStoreT(c, &cs[sg * 256u], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        store_one(m + e / 16u, n + e % 16u, cs[sg * 256u + e]);
    }
    workgroupBarrier();
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let m0 = wid.y * BLOCK;
    let n0 = wid.x * BLOCK;
    let sg = t / 32u;
    let lane = t % 32u;
    // This subgroup's quarter of the block.
    let fm = (sg / 2u) * 32u;
    let fn_ = (sg % 2u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < p.k4; k0 += BK4) {
        // 64 rows x 8 vec4 of each operand: four of each per invocation.
        for (var i = t; i < BLOCK * BK4; i += 128u) {
            let row = i / BK4;
            let k = k0 + i % BK4;
            var xv = vec4<f32>(0.0);
            var wv = vec4<f32>(0.0);
            if (k < p.k4) {
                xv = x[min(m0 + row, p.m - 1u) * p.k4 + k];
                wv = w_vec4(min(n0 + row, p.n - 1u) * p.k4 + k);
            }
            let at = row * BK + (i % BK4) * 4u;
            let xh = vec4<f16>(xv);
            let wh = vec4<f16>(wv);
            for (var c = 0u; c < 4u; c++) {
                xs[at + c] = xh[c];
                ws[at + c] = wh[c];
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xs[fm * BK + kk], BK);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&xs[(fm + 16u) * BK + kk], BK);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ws[fn_ * BK + kk], BK);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&ws[(fn_ + 16u) * BK + kk], BK);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    store_fragment(c00, sg, lane, m0 + fm, n0 + fn_);
    store_fragment(c01, sg, lane, m0 + fm, n0 + fn_ + 16u);
    store_fragment(c10, sg, lane, m0 + fm + 16u, n0 + fn_);
    store_fragment(c11, sg, lane, m0 + fm + 16u, n0 + fn_ + 16u);
}
