// Operands and output of the buffer matmuls (linear.wgsl, linear_tiled.wgsl):
// y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]) in the nn.Linear layout, both operands
// K-contiguous, x as vec4 and w as the dtype snippet's WPack.

struct Params {
    m: u32,
    n: u32,
    k4: u32,
    // Row stride of y and the first column this dispatch writes (W split by rows).
    ldy: u32,
    n_off: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<WPack>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Write output (m, n) with bias and activation; outputs past the edge are skipped.
fn store_one(m: u32, n: u32, v: f32) {
    if (m >= p.m || n >= p.n) {
        return;
    }
    var r = v;
    if (p.has_bias != 0u) {
        r += bias[p.n_off + n];
    }
    y[m * p.ldy + p.n_off + n] = activate(r, ACT);
}
