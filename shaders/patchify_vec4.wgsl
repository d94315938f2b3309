// patchify.wgsl for 2x2 patches when C and W are multiples of 4 (every SD3 and FLUX latent
// whose width is a multiple of 32 pixels): each invocation moves channels 4 cz..4 cz + 3, rows
// 2 gy, 2 gy + 1 and columns 4 gx..4 gx + 3 of one sample, two patches side by side, as eight
// vec4 loads and eight vec4 stores, where patchify.wgsl moves one float per invocation and
// finds its place with integer divisions (both run per lane on llvmpipe).
// UNPATCH and CHANNEL_LAST as in patchify.wgsl.

override UNPATCH: u32 = 0u;
override CHANNEL_LAST: u32 = 0u;

struct Params {
    // Channel quads (C / 4), image height and width.
    c4: u32,
    h: u32,
    w: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

// The block as image rows: img[2 k + r] is channel 4 cz + k, row 2 gy + r, columns 4 gx.. .
// As tokens: tok[4 j + q] is vec4 q of the block's part of token j (of the two), where the
// part is 4 consecutive channels at each (py, px) for CHANNEL_LAST (q = 2 py + px), else the
// 2x2 patch of channel 4 cz + q.
fn to_tokens(img: array<vec4<f32>, 8>) -> array<vec4<f32>, 8> {
    var tok: array<vec4<f32>, 8>;
    for (var j = 0u; j < 2u; j++) {
        for (var q = 0u; q < 4u; q++) {
            if (CHANNEL_LAST == 1u) {
                let r = q / 2u;
                let col = 2u * j + q % 2u;
                tok[4u * j + q] = vec4(img[r][col], img[2u + r][col], img[4u + r][col], img[6u + r][col]);
            } else {
                let a = img[2u * q];
                let b = img[2u * q + 1u];
                tok[4u * j + q] = vec4(a[2u * j], a[2u * j + 1u], b[2u * j], b[2u * j + 1u]);
            }
        }
    }
    return tok;
}

fn to_image(tok: array<vec4<f32>, 8>) -> array<vec4<f32>, 8> {
    var img: array<vec4<f32>, 8>;
    for (var k = 0u; k < 4u; k++) {
        for (var r = 0u; r < 2u; r++) {
            var v: vec4<f32>;
            for (var col = 0u; col < 4u; col++) {
                let j = col / 2u;
                let px = col % 2u;
                if (CHANNEL_LAST == 1u) {
                    v[col] = tok[4u * j + 2u * r + px][k];
                } else {
                    v[col] = tok[4u * j + k][2u * r + px];
                }
            }
            img[2u * k + r] = v;
        }
    }
    return img;
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w4 = p.w / 4u;
    if (gid.x >= w4 || gid.y >= p.h / 2u) {
        return;
    }
    let b = gid.z / p.c4;
    let cz = gid.z % p.c4;
    // vec4 index of the block's first image row, and the distance between its rows/channels.
    let img0 = ((gid.z * 4u * p.h) + 2u * gid.y) * w4 + gid.x;
    let plane = p.h * w4;
    // vec4 index of the block's part of its first token; tokens hold C vec4s.
    let c = 4u * p.c4;
    let gw = p.w / 2u;
    let t0 = b * (p.h / 2u) * gw + gid.y * gw + 2u * gid.x;
    var part0 = t0 * c + cz * 4u;
    var step = 1u;
    if (CHANNEL_LAST == 1u) {
        part0 = t0 * c + cz;
        step = p.c4;
    }
    var img: array<vec4<f32>, 8>;
    var tok: array<vec4<f32>, 8>;
    if (UNPATCH == 1u) {
        for (var j = 0u; j < 2u; j++) {
            for (var q = 0u; q < 4u; q++) {
                tok[4u * j + q] = src[part0 + j * c + q * step];
            }
        }
        img = to_image(tok);
        for (var k = 0u; k < 4u; k++) {
            for (var r = 0u; r < 2u; r++) {
                dst[img0 + k * plane + r * w4] = img[2u * k + r];
            }
        }
    } else {
        for (var k = 0u; k < 4u; k++) {
            for (var r = 0u; r < 2u; r++) {
                img[2u * k + r] = src[img0 + k * plane + r * w4];
            }
        }
        tok = to_tokens(img);
        for (var j = 0u; j < 2u; j++) {
            for (var q = 0u; q < 4u; q++) {
                dst[part0 + j * c + q * step] = tok[4u * j + q];
            }
        }
    }
}
