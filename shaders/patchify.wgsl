// Patchify NCHW latents [B, C, H, W] into tokens [B, (H/P)(W/P), P*P*C] in row-major patch
// order, or the inverse (UNPATCH = 1). Feature order inside a token: CHANNEL_LAST = 0 gives
// (c, ph, pw), pw fastest (conv-weight order, FLUX packing); CHANNEL_LAST = 1 gives
// (ph, pw, c), c fastest (SD3's final layer). One invocation per element.

override UNPATCH: u32 = 0u;
override CHANNEL_LAST: u32 = 0u;

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    psize: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.n) {
        return;
    }
    // i indexes the NCHW image; compute where that element sits among the tokens.
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let ch = (i / (p.w * p.h)) % p.c;
    let b = i / (p.w * p.h * p.c);
    let gw = p.w / p.psize;
    let token = (y / p.psize) * gw + x / p.psize;
    let py = y % p.psize;
    let px = x % p.psize;
    var f: u32;
    if (CHANNEL_LAST == 1u) {
        f = (py * p.psize + px) * p.c + ch;
    } else {
        f = (ch * p.psize + py) * p.psize + px;
    }
    let tokens = (p.h / p.psize) * gw;
    let t = (b * tokens + token) * (p.psize * p.psize * p.c) + f;
    if (UNPATCH == 1u) {
        dst[i] = src[t];
    } else {
        dst[t] = src[i];
    }
}
