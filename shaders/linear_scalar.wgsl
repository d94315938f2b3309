// y = act(x w^T + b) for any K (rows not a multiple of 4 long): one output per invocation.
// The vectorised kernels need K % 4 == 0; this one covers the rest.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // Row stride of y and the first column this dispatch writes (W split by rows).
    ldy: u32,
    n_off: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<WPack>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    if (n >= p.n || m >= p.m) {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc += x[m * p.k + k] * w_at(n * p.k + k);
    }
    if (p.has_bias != 0u) {
        acc += bias[p.n_off + n];
    }
    y[m * p.ldy + p.n_off + n] = activate(acc, ACT);
}
