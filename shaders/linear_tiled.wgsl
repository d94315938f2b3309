// y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]), the shared-memory variant for hardware GPUs
// (operands, parameters and `store_one` from linear_io.wgsl). A workgroup of 16 x 16
// invocations computes a 64 x 64 block of y. Per step of 16 k it stages the block's 64 rows of
// x and 64 rows of w (4 vec4 each) in workgroup memory, one vec4 of each per invocation,
// adjacent invocations reading adjacent addresses; then every invocation takes its 4 x 4
// outputs from there. An invocation owns rows ty + 16 i and columns tx + 16 j, so neighbours
// read neighbouring staged vec4 (no bank conflicts) and write neighbouring columns. Rows and
// columns past the edge are clamped on load and skipped on store; k past the end loads zeros.

const BLOCK: u32 = 64u;
// vec4 of k per staged step.
const STEP: u32 = 4u;

// Staged operands, [k4 within the step][row within the block].
var<workgroup> xs: array<vec4<f32>, 256>;
var<workgroup> ws: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let m0 = wid.y * BLOCK;
    let n0 = wid.x * BLOCK;
    // What this invocation stages: row t / 4 of the block, vec4 t % 4 of the step.
    let srow = t / STEP;
    let sk = t % STEP;
    let xrow = min(m0 + srow, p.m - 1u) * p.k4;
    let wrow = min(n0 + srow, p.n - 1u) * p.k4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k4; k0 += STEP) {
        let k = k0 + sk;
        var xv = vec4<f32>(0.0);
        var wv = vec4<f32>(0.0);
        if (k < p.k4) {
            xv = x[xrow + k];
            wv = w_vec4(wrow + k);
        }
        xs[sk * BLOCK + srow] = xv;
        ws[sk * BLOCK + srow] = wv;
        workgroupBarrier();
        for (var s = 0u; s < STEP; s++) {
            let wm = mat4x4<f32>(
                ws[s * BLOCK + lid.x],
                ws[s * BLOCK + lid.x + 16u],
                ws[s * BLOCK + lid.x + 32u],
                ws[s * BLOCK + lid.x + 48u],
            );
            acc0 += xs[s * BLOCK + lid.y] * wm;
            acc1 += xs[s * BLOCK + lid.y + 16u] * wm;
            acc2 += xs[s * BLOCK + lid.y + 32u] * wm;
            acc3 += xs[s * BLOCK + lid.y + 48u] * wm;
        }
        workgroupBarrier();
    }
    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store_one(m0 + lid.y + 16u * i, n0 + lid.x + 16u * j, rows[i][j]);
        }
    }
}
