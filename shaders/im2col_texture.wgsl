// im2col for convolution through the texture matmul: texture row r is output pixel
// first_pixel + r (over B x OH x OW), texel t holds patch elements 4t .. 4t+3 in the weight's
// (cin, ky, kx) order, zero outside the padded input.
// The kernel size is a pipeline constant and each invocation finds its pixel once for TEXELS
// texels: llvmpipe runs integer division by a runtime value per lane (about 8x the cost of
// the load it addresses), by a constant as a multiply.

override KH: u32 = 3u;
override KW: u32 = 3u;
const TEXELS: u32 = 4u;

struct Params {
    texels: u32,
    rows: u32,
    first_pixel: u32,
    cin: u32,
    h: u32,
    w: u32,
    ow: u32,
    ohw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

// Patch element e of the pixel whose window starts at (iy0, ix0) in sample b's first plane.
fn patch_value(plane0: u32, iy0: i32, ix0: i32, e: u32) -> f32 {
    let ci = e / (KH * KW);
    let ky = (e % (KH * KW)) / KW;
    let kx = e % KW;
    let iy = iy0 + i32(ky);
    let ix = ix0 + i32(kx);
    if (ci >= p.cin || iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return x[((plane0 + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let pix = p.first_pixel + r;
    let b = pix / p.ohw;
    let oy = (pix - b * p.ohw) / p.ow;
    let ox = pix - b * p.ohw - oy * p.ow;
    let plane0 = b * p.cin;
    let iy0 = i32(oy * p.stride) - i32(p.pad_top);
    let ix0 = i32(ox * p.stride) - i32(p.pad_left);
    for (var j = 0u; j < TEXELS; j++) {
        let t = gid.y * TEXELS + j;
        if (t < p.texels) {
            let e = 4u * t;
            let v = vec4<f32>(patch_value(plane0, iy0, ix0, e),
                              patch_value(plane0, iy0, ix0, e + 1u),
                              patch_value(plane0, iy0, ix0, e + 2u),
                              patch_value(plane0, iy0, ix0, e + 3u));
            textureStore(dst, vec2<u32>(t, r), v);
        }
    }
}
