// im2col for convolution through the texture matmul: texture row r is output pixel
// first_pixel + r (over B x OH x OW), texel t holds patch elements 4t .. 4t+3 in the weight's
// (cin, ky, kx) order, zero outside the padded input.

struct Params {
    texels: u32,
    rows: u32,
    first_pixel: u32,
    cin: u32,
    h: u32,
    w: u32,
    ow: u32,
    ohw: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

fn patch_value(b: u32, oy: u32, ox: u32, e: u32) -> f32 {
    let kx = e % p.kw;
    let ky = (e / p.kw) % p.kh;
    let ci = e / (p.kw * p.kh);
    let iy = i32(oy * p.stride + ky) - i32(p.pad_top);
    let ix = i32(ox * p.stride + kx) - i32(p.pad_left);
    if (ci >= p.cin || iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return x[((b * p.cin + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.texels * p.rows) {
        return;
    }
    let t = i % p.texels;
    let r = i / p.texels;
    let pix = p.first_pixel + r;
    let b = pix / p.ohw;
    let oy = (pix % p.ohw) / p.ow;
    let ox = pix % p.ow;
    let e = 4u * t;
    let v = vec4<f32>(patch_value(b, oy, ox, e), patch_value(b, oy, ox, e + 1u),
                      patch_value(b, oy, ox, e + 2u), patch_value(b, oy, ox, e + 3u));
    textureStore(dst, vec2<u32>(t, r), v);
}
