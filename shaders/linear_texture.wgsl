// y = act(x W^T + b) with both operands read through textures: x as rgba32float [K/4, M] (packed
// by pack_texture.wgsl), W as [K/4, N] in its stored dtype (the dtype snippet's WTexel and
// w_texel). Software rasterisers (Mesa's llvmpipe) fetch texels vectorised but split every
// buffer load into a per-lane loop, so on them this runs several times faster than linear.wgsl.
// Fully unrolled 16 x 16 register block per invocation (see linear.wgsl for the scheme).
// Output rows go to y[row * ldy + col], or with `pix` > 0 to the NCHW position of a conv
// output pixel: y[((row / pix) * ldy + col) * pix + row % pix] (im2col convolution).

struct Params {
    m: u32,
    n: u32,
    k4: u32,
    ldy: u32,
    n_off: u32,
    has_bias: u32,
    act: u32,
    // Global index of this dispatch's first row (NCHW mode binds the whole output).
    m_off: u32,
    pix: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var xt: texture_2d<f32>;
@group(0) @binding(2) var wt: texture_2d<WTexel>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn store(m: u32, n0: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    let row = p.m_off + m;
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + j;
        if (n < p.n) {
            var r = v[j];
            if (p.has_bias != 0u) {
                r += bias[p.n_off + n];
            }
            let col = p.n_off + n;
            var at = row * p.ldy + col;
            if (p.pix > 0u) {
                at = ((row / p.pix) * p.ldy + col) * p.pix + row % p.pix;
            }
            y[at] = activate(r, p.act);
        }
    }
}

@compute @workgroup_size(8, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 16u;
    let m0 = gid.y * 16u;
    if (n0 >= p.n || m0 >= p.m) {
        return;
    }
    let last_m = p.m - 1u;
    let last_n = p.n - 1u;
    let xr0 = min(m0 + 0u, last_m);
    let xr1 = min(m0 + 1u, last_m);
    let xr2 = min(m0 + 2u, last_m);
    let xr3 = min(m0 + 3u, last_m);
    let xr4 = min(m0 + 4u, last_m);
    let xr5 = min(m0 + 5u, last_m);
    let xr6 = min(m0 + 6u, last_m);
    let xr7 = min(m0 + 7u, last_m);
    let xr8 = min(m0 + 8u, last_m);
    let xr9 = min(m0 + 9u, last_m);
    let xr10 = min(m0 + 10u, last_m);
    let xr11 = min(m0 + 11u, last_m);
    let xr12 = min(m0 + 12u, last_m);
    let xr13 = min(m0 + 13u, last_m);
    let xr14 = min(m0 + 14u, last_m);
    let xr15 = min(m0 + 15u, last_m);
    let wr0 = min(n0 + 0u, last_n);
    let wr1 = min(n0 + 1u, last_n);
    let wr2 = min(n0 + 2u, last_n);
    let wr3 = min(n0 + 3u, last_n);
    let wr4 = min(n0 + 4u, last_n);
    let wr5 = min(n0 + 5u, last_n);
    let wr6 = min(n0 + 6u, last_n);
    let wr7 = min(n0 + 7u, last_n);
    let wr8 = min(n0 + 8u, last_n);
    let wr9 = min(n0 + 9u, last_n);
    let wr10 = min(n0 + 10u, last_n);
    let wr11 = min(n0 + 11u, last_n);
    let wr12 = min(n0 + 12u, last_n);
    let wr13 = min(n0 + 13u, last_n);
    let wr14 = min(n0 + 14u, last_n);
    let wr15 = min(n0 + 15u, last_n);
    var acc0_0 = vec4<f32>(0.0);
    var acc0_1 = vec4<f32>(0.0);
    var acc0_2 = vec4<f32>(0.0);
    var acc0_3 = vec4<f32>(0.0);
    var acc1_0 = vec4<f32>(0.0);
    var acc1_1 = vec4<f32>(0.0);
    var acc1_2 = vec4<f32>(0.0);
    var acc1_3 = vec4<f32>(0.0);
    var acc2_0 = vec4<f32>(0.0);
    var acc2_1 = vec4<f32>(0.0);
    var acc2_2 = vec4<f32>(0.0);
    var acc2_3 = vec4<f32>(0.0);
    var acc3_0 = vec4<f32>(0.0);
    var acc3_1 = vec4<f32>(0.0);
    var acc3_2 = vec4<f32>(0.0);
    var acc3_3 = vec4<f32>(0.0);
    var acc4_0 = vec4<f32>(0.0);
    var acc4_1 = vec4<f32>(0.0);
    var acc4_2 = vec4<f32>(0.0);
    var acc4_3 = vec4<f32>(0.0);
    var acc5_0 = vec4<f32>(0.0);
    var acc5_1 = vec4<f32>(0.0);
    var acc5_2 = vec4<f32>(0.0);
    var acc5_3 = vec4<f32>(0.0);
    var acc6_0 = vec4<f32>(0.0);
    var acc6_1 = vec4<f32>(0.0);
    var acc6_2 = vec4<f32>(0.0);
    var acc6_3 = vec4<f32>(0.0);
    var acc7_0 = vec4<f32>(0.0);
    var acc7_1 = vec4<f32>(0.0);
    var acc7_2 = vec4<f32>(0.0);
    var acc7_3 = vec4<f32>(0.0);
    var acc8_0 = vec4<f32>(0.0);
    var acc8_1 = vec4<f32>(0.0);
    var acc8_2 = vec4<f32>(0.0);
    var acc8_3 = vec4<f32>(0.0);
    var acc9_0 = vec4<f32>(0.0);
    var acc9_1 = vec4<f32>(0.0);
    var acc9_2 = vec4<f32>(0.0);
    var acc9_3 = vec4<f32>(0.0);
    var acc10_0 = vec4<f32>(0.0);
    var acc10_1 = vec4<f32>(0.0);
    var acc10_2 = vec4<f32>(0.0);
    var acc10_3 = vec4<f32>(0.0);
    var acc11_0 = vec4<f32>(0.0);
    var acc11_1 = vec4<f32>(0.0);
    var acc11_2 = vec4<f32>(0.0);
    var acc11_3 = vec4<f32>(0.0);
    var acc12_0 = vec4<f32>(0.0);
    var acc12_1 = vec4<f32>(0.0);
    var acc12_2 = vec4<f32>(0.0);
    var acc12_3 = vec4<f32>(0.0);
    var acc13_0 = vec4<f32>(0.0);
    var acc13_1 = vec4<f32>(0.0);
    var acc13_2 = vec4<f32>(0.0);
    var acc13_3 = vec4<f32>(0.0);
    var acc14_0 = vec4<f32>(0.0);
    var acc14_1 = vec4<f32>(0.0);
    var acc14_2 = vec4<f32>(0.0);
    var acc14_3 = vec4<f32>(0.0);
    var acc15_0 = vec4<f32>(0.0);
    var acc15_1 = vec4<f32>(0.0);
    var acc15_2 = vec4<f32>(0.0);
    var acc15_3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k4; k++) {
        let wm0 = mat4x4<f32>(w_texel(textureLoad(wt, vec2<u32>(k, wr0), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr1), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr2), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr3), 0)));
        let wm1 = mat4x4<f32>(w_texel(textureLoad(wt, vec2<u32>(k, wr4), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr5), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr6), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr7), 0)));
        let wm2 = mat4x4<f32>(w_texel(textureLoad(wt, vec2<u32>(k, wr8), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr9), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr10), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr11), 0)));
        let wm3 = mat4x4<f32>(w_texel(textureLoad(wt, vec2<u32>(k, wr12), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr13), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr14), 0)), w_texel(textureLoad(wt, vec2<u32>(k, wr15), 0)));
        let xv0 = textureLoad(xt, vec2<u32>(k, xr0), 0);
        acc0_0 += xv0 * wm0;
        acc0_1 += xv0 * wm1;
        acc0_2 += xv0 * wm2;
        acc0_3 += xv0 * wm3;
        let xv1 = textureLoad(xt, vec2<u32>(k, xr1), 0);
        acc1_0 += xv1 * wm0;
        acc1_1 += xv1 * wm1;
        acc1_2 += xv1 * wm2;
        acc1_3 += xv1 * wm3;
        let xv2 = textureLoad(xt, vec2<u32>(k, xr2), 0);
        acc2_0 += xv2 * wm0;
        acc2_1 += xv2 * wm1;
        acc2_2 += xv2 * wm2;
        acc2_3 += xv2 * wm3;
        let xv3 = textureLoad(xt, vec2<u32>(k, xr3), 0);
        acc3_0 += xv3 * wm0;
        acc3_1 += xv3 * wm1;
        acc3_2 += xv3 * wm2;
        acc3_3 += xv3 * wm3;
        let xv4 = textureLoad(xt, vec2<u32>(k, xr4), 0);
        acc4_0 += xv4 * wm0;
        acc4_1 += xv4 * wm1;
        acc4_2 += xv4 * wm2;
        acc4_3 += xv4 * wm3;
        let xv5 = textureLoad(xt, vec2<u32>(k, xr5), 0);
        acc5_0 += xv5 * wm0;
        acc5_1 += xv5 * wm1;
        acc5_2 += xv5 * wm2;
        acc5_3 += xv5 * wm3;
        let xv6 = textureLoad(xt, vec2<u32>(k, xr6), 0);
        acc6_0 += xv6 * wm0;
        acc6_1 += xv6 * wm1;
        acc6_2 += xv6 * wm2;
        acc6_3 += xv6 * wm3;
        let xv7 = textureLoad(xt, vec2<u32>(k, xr7), 0);
        acc7_0 += xv7 * wm0;
        acc7_1 += xv7 * wm1;
        acc7_2 += xv7 * wm2;
        acc7_3 += xv7 * wm3;
        let xv8 = textureLoad(xt, vec2<u32>(k, xr8), 0);
        acc8_0 += xv8 * wm0;
        acc8_1 += xv8 * wm1;
        acc8_2 += xv8 * wm2;
        acc8_3 += xv8 * wm3;
        let xv9 = textureLoad(xt, vec2<u32>(k, xr9), 0);
        acc9_0 += xv9 * wm0;
        acc9_1 += xv9 * wm1;
        acc9_2 += xv9 * wm2;
        acc9_3 += xv9 * wm3;
        let xv10 = textureLoad(xt, vec2<u32>(k, xr10), 0);
        acc10_0 += xv10 * wm0;
        acc10_1 += xv10 * wm1;
        acc10_2 += xv10 * wm2;
        acc10_3 += xv10 * wm3;
        let xv11 = textureLoad(xt, vec2<u32>(k, xr11), 0);
        acc11_0 += xv11 * wm0;
        acc11_1 += xv11 * wm1;
        acc11_2 += xv11 * wm2;
        acc11_3 += xv11 * wm3;
        let xv12 = textureLoad(xt, vec2<u32>(k, xr12), 0);
        acc12_0 += xv12 * wm0;
        acc12_1 += xv12 * wm1;
        acc12_2 += xv12 * wm2;
        acc12_3 += xv12 * wm3;
        let xv13 = textureLoad(xt, vec2<u32>(k, xr13), 0);
        acc13_0 += xv13 * wm0;
        acc13_1 += xv13 * wm1;
        acc13_2 += xv13 * wm2;
        acc13_3 += xv13 * wm3;
        let xv14 = textureLoad(xt, vec2<u32>(k, xr14), 0);
        acc14_0 += xv14 * wm0;
        acc14_1 += xv14 * wm1;
        acc14_2 += xv14 * wm2;
        acc14_3 += xv14 * wm3;
        let xv15 = textureLoad(xt, vec2<u32>(k, xr15), 0);
        acc15_0 += xv15 * wm0;
        acc15_1 += xv15 * wm1;
        acc15_2 += xv15 * wm2;
        acc15_3 += xv15 * wm3;
    }
    store(m0 + 0u, n0 + 0u, acc0_0);
    store(m0 + 0u, n0 + 4u, acc0_1);
    store(m0 + 0u, n0 + 8u, acc0_2);
    store(m0 + 0u, n0 + 12u, acc0_3);
    store(m0 + 1u, n0 + 0u, acc1_0);
    store(m0 + 1u, n0 + 4u, acc1_1);
    store(m0 + 1u, n0 + 8u, acc1_2);
    store(m0 + 1u, n0 + 12u, acc1_3);
    store(m0 + 2u, n0 + 0u, acc2_0);
    store(m0 + 2u, n0 + 4u, acc2_1);
    store(m0 + 2u, n0 + 8u, acc2_2);
    store(m0 + 2u, n0 + 12u, acc2_3);
    store(m0 + 3u, n0 + 0u, acc3_0);
    store(m0 + 3u, n0 + 4u, acc3_1);
    store(m0 + 3u, n0 + 8u, acc3_2);
    store(m0 + 3u, n0 + 12u, acc3_3);
    store(m0 + 4u, n0 + 0u, acc4_0);
    store(m0 + 4u, n0 + 4u, acc4_1);
    store(m0 + 4u, n0 + 8u, acc4_2);
    store(m0 + 4u, n0 + 12u, acc4_3);
    store(m0 + 5u, n0 + 0u, acc5_0);
    store(m0 + 5u, n0 + 4u, acc5_1);
    store(m0 + 5u, n0 + 8u, acc5_2);
    store(m0 + 5u, n0 + 12u, acc5_3);
    store(m0 + 6u, n0 + 0u, acc6_0);
    store(m0 + 6u, n0 + 4u, acc6_1);
    store(m0 + 6u, n0 + 8u, acc6_2);
    store(m0 + 6u, n0 + 12u, acc6_3);
    store(m0 + 7u, n0 + 0u, acc7_0);
    store(m0 + 7u, n0 + 4u, acc7_1);
    store(m0 + 7u, n0 + 8u, acc7_2);
    store(m0 + 7u, n0 + 12u, acc7_3);
    store(m0 + 8u, n0 + 0u, acc8_0);
    store(m0 + 8u, n0 + 4u, acc8_1);
    store(m0 + 8u, n0 + 8u, acc8_2);
    store(m0 + 8u, n0 + 12u, acc8_3);
    store(m0 + 9u, n0 + 0u, acc9_0);
    store(m0 + 9u, n0 + 4u, acc9_1);
    store(m0 + 9u, n0 + 8u, acc9_2);
    store(m0 + 9u, n0 + 12u, acc9_3);
    store(m0 + 10u, n0 + 0u, acc10_0);
    store(m0 + 10u, n0 + 4u, acc10_1);
    store(m0 + 10u, n0 + 8u, acc10_2);
    store(m0 + 10u, n0 + 12u, acc10_3);
    store(m0 + 11u, n0 + 0u, acc11_0);
    store(m0 + 11u, n0 + 4u, acc11_1);
    store(m0 + 11u, n0 + 8u, acc11_2);
    store(m0 + 11u, n0 + 12u, acc11_3);
    store(m0 + 12u, n0 + 0u, acc12_0);
    store(m0 + 12u, n0 + 4u, acc12_1);
    store(m0 + 12u, n0 + 8u, acc12_2);
    store(m0 + 12u, n0 + 12u, acc12_3);
    store(m0 + 13u, n0 + 0u, acc13_0);
    store(m0 + 13u, n0 + 4u, acc13_1);
    store(m0 + 13u, n0 + 8u, acc13_2);
    store(m0 + 13u, n0 + 12u, acc13_3);
    store(m0 + 14u, n0 + 0u, acc14_0);
    store(m0 + 14u, n0 + 4u, acc14_1);
    store(m0 + 14u, n0 + 8u, acc14_2);
    store(m0 + 14u, n0 + 12u, acc14_3);
    store(m0 + 15u, n0 + 0u, acc15_0);
    store(m0 + 15u, n0 + 4u, acc15_1);
    store(m0 + 15u, n0 + 8u, acc15_2);
    store(m0 + 15u, n0 + 12u, acc15_3);
}
