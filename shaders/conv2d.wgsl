// 2D convolution, NCHW activations, weights [cout, cin, kh, kw] in their stored dtype (through
// the dtype snippet), bias f32, any stride and per-side zero padding (the VAE encoder's
// stride-2 conv pads right and bottom only). Each invocation computes one output pixel for
// four output channels, so every input value it loads feeds four products.

struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
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

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pix = gid.x;
    let c0 = gid.y * 4u;
    let b = gid.z;
    if (pix >= p.oh * p.ow) {
        return;
    }
    let oy = pix / p.ow;
    let ox = pix % p.ow;
    let ksize = p.cin * p.kh * p.kw;
    // Clamp the weight rows of channels past cout (their results are not stored).
    let w0 = min(c0, p.cout - 1u) * ksize;
    let w1 = min(c0 + 1u, p.cout - 1u) * ksize;
    let w2 = min(c0 + 2u, p.cout - 1u) * ksize;
    let w3 = min(c0 + 3u, p.cout - 1u) * ksize;
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad_top);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.stride + kx) - i32(p.pad_left);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            var xi = (b * p.cin * p.h + u32(iy)) * p.w + u32(ix);
            var wi = ky * p.kw + kx;
            for (var ci = 0u; ci < p.cin; ci++) {
                let v = x[xi];
                acc += v * vec4<f32>(w_at(w0 + wi), w_at(w1 + wi), w_at(w2 + wi), w_at(w3 + wi));
                xi += p.h * p.w;
                wi += p.kh * p.kw;
            }
        }
    }
    for (var j = 0u; j < 4u; j++) {
        let c = c0 + j;
        if (c < p.cout) {
            var v = acc[j];
            if (p.has_bias != 0u) {
                v += bias[c];
            }
            y[((b * p.cout + c) * p.oh + oy) * p.ow + ox] = v;
        }
    }
}
