// Operands and output of the texture matmuls (linear_texture*.wgsl, composed after this):
// x as rgba32float [K/4, M] (packed by pack_texture.wgsl), W in a texture of its dtype
// snippet. Output rows go to y[row * ldy + col], or with the define NCHW = 1 to the NCHW
// position of a conv output pixel: y[((row / pix) * ldy + col) * pix + row % pix] (im2col
// convolution). NCHW and ACT are defines so that the epilogue of a plain matmul holds no
// untaken branch: llvmpipe runs both sides of a branch on a uniform under a lane mask, and the
// integer division alone cost 2-3 % of a matmul.

struct Params {
    m: u32,
    n: u32,
    // Loop steps: K / 4, or K / 8 for the kernels of eight k per step (_k8).
    kt: u32,
    ldy: u32,
    n_off: u32,
    has_bias: u32,
    // Global index of this dispatch's first row (NCHW mode binds the whole output).
    m_off: u32,
    pix: u32,
    // Matrix rows per weight texture row: with 8, texel t of row n sits at (8 t + n % 8, n / 8),
    // so the loads of eight lanes reading eight adjacent rows touch two cache lines instead of
    // eight lines a row apart, which alias in the cache when rows are a multiple of 4 KiB long
    // (f32 1024^3 on llvmpipe: 33-35 against 19-27 GFLOP/s in alternating runs; K = 1536,
    // within the noise); 1 (the plain layout) where the texture would be too wide. Set by
    // matrix.rs. A parameter, not an override constant: each pipeline costs llvmpipe about 11 s
    // to compile, and this way both layouts share one.
    interleave: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var xt: texture_storage_2d<rgba32float, read>;
// Binding 2, the weight texture `wt`, is declared by the dtype snippet (its format differs).
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Where the first texel of weight row n (clamped to the last row) sits in the interleaved
// layout; texel t of the row is k * interleave further along x.
fn w_origin(n: u32) -> vec2<u32> {
    let r = min(n, p.n - 1u);
    return vec2<u32>(r % p.interleave, r / p.interleave);
}

// Columns n0, n0 + 8, n0 + 16, n0 + 24 of row m.
fn store(m: u32, n0: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    let row = p.m_off + m;
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + 8u * j;
        if (n < p.n) {
            var r = v[j];
            if (p.has_bias != 0u) {
                r += bias[p.n_off + n];
            }
            let col = p.n_off + n;
            var at = row * p.ldy + col;
            if (NCHW != 0u) {
                at = ((row / p.pix) * p.ldy + col) * p.pix + row % p.pix;
            }
            y[at] = activate(r, ACT);
        }
    }
}
