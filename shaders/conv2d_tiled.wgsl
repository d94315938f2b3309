// 2D convolution as an implicit GEMM for hardware GPUs: y[b, co, pix] = sum_k w[co, k]
// patch[b, k, pix] + bias[co], k = (ci, ky, kx) in the weight's order, the patch matrix never
// stored: each step gathers it from x. Same blocking as linear_tiled.wgsl: a workgroup of
// 16 x 16 invocations computes 64 output channels x 64 pixels of one sample, staging per step of
// 16 k the block's 64 weight rows (one vec4 of k each per invocation) and 64 patch columns
// (4 k each) in workgroup memory. Adjacent invocations stage and store adjacent pixels (row-
// contiguous reads of x and writes of y). The kernel size is a define (KH, KW) so that the
// (ci, ky, kx) of k is found by multiplication; padding and edges load zeros.

struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    // k = cin * KH * KW, and its vec4 count.
    k: u32,
    k4: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<WPack>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const BLOCK: u32 = 64u;
const STEP: u32 = 4u;
const KHW: u32 = KH * KW;

// [k4 within the step][row within the block]: weight rows (output channels) and patch columns.
var<workgroup> ws: array<vec4<f32>, 256>;
var<workgroup> ps: array<vec4<f32>, 256>;

// Weights k .. k + 3 of row `row` (zero past k): one vec4 load where rows are vec4-aligned.
fn weights4(row: u32, k: u32) -> vec4<f32> {
    if (WVEC == 1u) {
        if (k < p.k) {
            return w_vec4((row * p.k + k) / 4u);
        }
        return vec4<f32>(0.0);
    }
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (k + e < p.k) {
            v[e] = w_at(row * p.k + k + e);
        }
    }
    return v;
}

// Patch element k of the pixel whose window starts at (iy0, ix0), in the sample's planes.
fn patch_at(plane0: u32, iy0: i32, ix0: i32, k: u32) -> f32 {
    let ci = k / KHW;
    let r = k - ci * KHW;
    let ky = r / KW;
    let iy = iy0 + i32(ky);
    let ix = ix0 + i32(r - ky * KW);
    if (k >= p.k || iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return x[((plane0 + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let npix = p.oh * p.ow;
    let pix0 = wid.x * BLOCK;
    let co0 = wid.y * BLOCK;
    let b = wid.z;
    // Staged by this invocation: weight row t / 4 (vec4 t % 4 of the step), and patch column
    // t % 64 (vec4 t / 64 of the step), whose pixel stays the same for every step.
    let wrow = min(co0 + t / STEP, p.cout - 1u);
    let wk = (t % STEP) * 4u;
    let col = t % BLOCK;
    let pk = t / BLOCK;
    let pix = min(pix0 + col, npix - 1u);
    let oy = pix / p.ow;
    let ox = pix - oy * p.ow;
    let iy0 = i32(oy * p.stride) - i32(p.pad_top);
    let ix0 = i32(ox * p.stride) - i32(p.pad_left);
    let plane0 = b * p.cin;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k4 * 4u; k0 += 4u * STEP) {
        ws[(t % STEP) * BLOCK + t / STEP] = weights4(wrow, k0 + wk);
        let k = k0 + 4u * pk;
        ps[pk * BLOCK + col] = vec4<f32>(patch_at(plane0, iy0, ix0, k),
                                         patch_at(plane0, iy0, ix0, k + 1u),
                                         patch_at(plane0, iy0, ix0, k + 2u),
                                         patch_at(plane0, iy0, ix0, k + 3u));
        workgroupBarrier();
        for (var s = 0u; s < STEP; s++) {
            let pm = mat4x4<f32>(
                ps[s * BLOCK + lid.x],
                ps[s * BLOCK + lid.x + 16u],
                ps[s * BLOCK + lid.x + 32u],
                ps[s * BLOCK + lid.x + 48u],
            );
            acc0 += ws[s * BLOCK + lid.y] * pm;
            acc1 += ws[s * BLOCK + lid.y + 16u] * pm;
            acc2 += ws[s * BLOCK + lid.y + 32u] * pm;
            acc3 += ws[s * BLOCK + lid.y + 48u] * pm;
        }
        workgroupBarrier();
    }
    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let co = co0 + lid.y + 16u * i;
        if (co >= p.cout) {
            continue;
        }
        var shift = 0.0;
        if (p.has_bias != 0u) {
            shift = bias[co];
        }
        for (var j = 0u; j < 4u; j++) {
            let px = pix0 + lid.x + 16u * j;
            if (px < npix) {
                y[(b * p.cout + co) * npix + px] = rows[i][j] + shift;
            }
        }
    }
}
