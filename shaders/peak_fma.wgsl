// Compute ceiling: two independent vec4 multiply-add chains per invocation, 64 FLOPs per
// iteration; the result is stored so nothing is optimised away. Two chains, not more: on a
// SIMD CPU (llvmpipe) every scalar of every invocation's chain is a vector register, and eight
// vec4 chains (32 registers) spilled and measured 50 GFLOP/s where two measure 74 on the same
// machine; hardware GPUs hide the chains' latency with other invocations.

struct Params {
    iters: u32,
    seed: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let s = f32(i) * 1e-7 + p.seed;
    var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
    var a1 = a0 + 0.01;
    let m = vec4<f32>(0.9999);
    let c = vec4<f32>(1e-4);
    for (var k = 0u; k < p.iters; k++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
    }
    out[i] = a0 + a1;
}
