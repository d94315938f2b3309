// y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]), the large-tile shared-memory variant for
// hardware GPUs (operands, parameters and `store_one` from linear_io.wgsl). A workgroup of
// 16 x 16 invocations computes a 128 x 128 block of y, each invocation 8 x 8 of it: rows
// 4 ty + i and 64 + 4 ty + i, columns 4 tx + j and 64 + 4 tx + j (i, j < 4), so that per k it
// reads two vec4 of staged x and two of staged w for 64 FMAs. Per step of 8 k every invocation
// stages one vec4 of x and one of w (two neighbours cover one row's 8 k, whole 32-byte
// sectors), transposed to [k][row] with one vec4 of padding per k against bank conflicts, and
// fetches the next step's vec4 from memory while it computes this one. Rows and columns past
// the edge are clamped on load and skipped on store; k past the end loads zeros.

const BLOCK: u32 = 128u;
// vec4 of k per staged step, and staged vec4 per k (BLOCK / 4 plus one of padding).
const STEP: u32 = 2u;
const PITCH: u32 = 33u;

// Staged operands, [k within the step][row / 4] as vec4 of four rows.
var<workgroup> xs: array<vec4<f32>, 264>;
var<workgroup> ws: array<vec4<f32>, 264>;

// Outputs (m, n .. n + 3).
fn store4(m: u32, n: u32, v: vec4<f32>) {
    store_one(m, n, v.x);
    store_one(m, n + 1u, v.y);
    store_one(m, n + 2u, v.z);
    store_one(m, n + 3u, v.w);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let m0 = wid.y * BLOCK;
    let n0 = wid.x * BLOCK;
    // What this invocation stages: row t / 2 of the block, vec4 t % 2 of the step.
    let srow = t / STEP;
    let sk = t % STEP;
    let xrow = min(m0 + srow, p.m - 1u) * p.k4;
    let wrow = min(n0 + srow, p.n - 1u) * p.k4;
    var xv = vec4<f32>(0.0);
    var wv = vec4<f32>(0.0);
    if (sk < p.k4) {
        xv = x[xrow + sk];
        wv = w_vec4(wrow + sk);
    }
    // Accumulators c{i}{h}: row (i < 4: 4 ty + i, else 64 + 4 ty + i - 4), columns
    // 64 h + 4 tx + 0..3. Named and stored with constant indices: with an array and an
    // epilogue loop, NVIDIA's compiler (H200) ran 42 TFLOP/s without an activation but
    // 2.3 with GELU, whose larger epilogue left the array in local memory; this form runs
    // 29-31 TFLOP/s on every SD3 shape, with or without (BENCHMARKS.md).
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k4; k0 += STEP) {
        for (var c = 0u; c < 4u; c++) {
            let at = (4u * sk + c) * PITCH + srow / 4u;
            xs[at][srow % 4u] = xv[c];
            ws[at][srow % 4u] = wv[c];
        }
        workgroupBarrier();
        let next = k0 + STEP + sk;
        if (next < p.k4) {
            xv = x[xrow + next];
            wv = w_vec4(wrow + next);
        } else {
            xv = vec4<f32>(0.0);
            wv = vec4<f32>(0.0);
        }
        for (var k = 0u; k < 4u * STEP; k++) {
            let a0 = xs[k * PITCH + lid.y];
            let a1 = xs[k * PITCH + 16u + lid.y];
            let b0 = ws[k * PITCH + lid.x];
            let b1 = ws[k * PITCH + 16u + lid.x];
            c00 += a0.x * b0;
            c01 += a0.x * b1;
            c10 += a0.y * b0;
            c11 += a0.y * b1;
            c20 += a0.z * b0;
            c21 += a0.z * b1;
            c30 += a0.w * b0;
            c31 += a0.w * b1;
            c40 += a1.x * b0;
            c41 += a1.x * b1;
            c50 += a1.y * b0;
            c51 += a1.y * b1;
            c60 += a1.z * b0;
            c61 += a1.z * b1;
            c70 += a1.w * b0;
            c71 += a1.w * b1;
        }
        workgroupBarrier();
    }
    let m = m0 + 4u * lid.y;
    let n = n0 + 4u * lid.x;
    store4(m, n, c00);
    store4(m, n + 64u, c01);
    store4(m + 1u, n, c10);
    store4(m + 1u, n + 64u, c11);
    store4(m + 2u, n, c20);
    store4(m + 2u, n + 64u, c21);
    store4(m + 3u, n, c30);
    store4(m + 3u, n + 64u, c31);
    store4(m + 64u, n, c40);
    store4(m + 64u, n + 64u, c41);
    store4(m + 65u, n, c50);
    store4(m + 65u, n + 64u, c51);
    store4(m + 66u, n, c60);
    store4(m + 66u, n + 64u, c61);
    store4(m + 67u, n, c70);
    store4(m + 67u, n + 64u, c71);
}
