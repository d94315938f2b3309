//! Decoding and encoding within the device's limits. The largest activation of a decode
//! (or encode) is computed from the config before anything runs; when it does not fit one
//! binding (or buffer), the latents are cut into overlapping tiles, each run alone and
//! blended on the host with weights that ramp linearly across every overlap (a partition of
//! unity after normalising), so no seam shows. As in diffusers' tiled VAE, each tile's
//! mid-block attention sees only that tile. Samples run one at a time.

use noiseshift_kernels::Gpu;

use crate::error::{Result, input};
use crate::models::vae::Vae;
use crate::tensor_file::HostTensor;

/// `--vae-tiling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TilingMode {
    /// Tile only when the activations would not fit the device.
    Auto,
    On,
    Off,
}

/// Tiles of `tile` x `tile` latents overlapping by `overlap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePlan {
    pub tile: usize,
    pub overlap: usize,
}

/// Latent tile side of forced tiling (512 px at /8, diffusers' default).
const DEFAULT_TILE: usize = 64;

/// Largest activation in bytes of decoding one sample of h x w latents: every decoder level's
/// width at its resolution, and the upsampled input of the next level; attention scores are
/// chunked to fit separately.
pub fn decode_bytes(vae: &Vae, h: usize, w: usize) -> u64 {
    let ch: Vec<usize> = vae
        .config
        .block_out_channels
        .iter()
        .rev()
        .copied()
        .collect();
    let mut largest = 0u64;
    for (i, &c) in ch.iter().enumerate() {
        let up = if i + 1 < ch.len() { i + 1 } else { i };
        let at = |s: usize| (c * (h << s) * (w << s) * 4) as u64;
        largest = largest.max(at(i)).max(at(up));
    }
    largest
}

/// Largest activation in bytes of encoding one H x W image (H, W multiples of the factor).
pub fn encode_bytes(vae: &Vae, height: usize, width: usize) -> u64 {
    let ch = &vae.config.block_out_channels;
    let mut largest = (vae.config.in_channels * height * width * 4) as u64;
    for (i, &c) in ch.iter().enumerate() {
        let before = if i == 0 { c } else { ch[i - 1].max(c) };
        largest = largest.max((before * (height >> i) * (width >> i) * 4) as u64);
    }
    largest
}

/// What one activation may take on this device.
fn limit(gpu: &Gpu) -> u64 {
    gpu.max_binding().min(gpu.limits.max_buffer_size)
}

/// Whether to tile an h x w latent job whose largest activation at latent size s x s is
/// `bytes(s, s)`, and with which tiles; the reason, to print, when tiling.
pub fn plan(
    gpu: &Gpu,
    mode: TilingMode,
    h: usize,
    w: usize,
    bytes: &dyn Fn(usize, usize) -> u64,
) -> Result<(Option<TilePlan>, String)> {
    let lim = limit(gpu);
    let whole = bytes(h, w);
    let fits = |s: usize| bytes(s, s) <= lim;
    let largest_tile = (1..=h.max(w)).rev().find(|&s| fits(s));
    let mib = |b: u64| b as f64 / 1048576.0;
    match mode {
        TilingMode::Off if whole > lim => input(format!(
            "{w}x{h} latents need a {:.0} MiB activation, over this device's {:.0} MiB limit; use --vae-tiling auto",
            mib(whole),
            mib(lim)
        )),
        TilingMode::Off => Ok((None, String::new())),
        TilingMode::Auto if whole <= lim => Ok((None, String::new())),
        _ => {
            let Some(fit) = largest_tile.filter(|&s| s >= 4) else {
                return input(format!(
                    "even a 4x4-latent VAE tile exceeds this device's {:.0} MiB limit",
                    mib(lim)
                ));
            };
            let tile = if mode == TilingMode::On {
                fit.min(DEFAULT_TILE)
            } else {
                fit
            };
            let reason = if mode == TilingMode::On {
                "--vae-tiling on".to_string()
            } else {
                format!(
                    "{w}x{h} latents need a {:.0} MiB activation, over this device's {:.0} MiB binding limit",
                    mib(whole),
                    mib(lim)
                )
            };
            let p = TilePlan {
                tile,
                overlap: tile / 4,
            };
            Ok((Some(p), reason))
        }
    }
}

/// Tile starts along a side of `len`: tiles of `tile` whose neighbours overlap by at least
/// `overlap`, the first at 0, the last ending at `len`.
fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = (tile - overlap).max(1);
    let n = (len - overlap).div_ceil(stride);
    (0..n).map(|k| k * (len - tile) / (n - 1)).collect()
}

/// Weight of output position `i` (of `len`) in a tile covering `[a, b)` whose neighbours
/// end at `prev_end` (before it) and start at `next_start` (after it): a linear ramp across
/// each overlap.
fn ramp(
    i: usize,
    (a, b): (usize, usize),
    prev_end: Option<usize>,
    next_start: Option<usize>,
) -> f32 {
    let mut w = 1.0f32;
    if let Some(e) = prev_end.filter(|&e| e > a && i < e) {
        w = w.min(((i - a) as f32 + 0.5) / (e - a) as f32);
    }
    if let Some(s) = next_start.filter(|&s| s < b && i >= s) {
        w = w.min(((b - i) as f32 - 0.5) / (b - s) as f32);
    }
    w.max(1e-6)
}

/// Run `job` on tiles of an h x w latent grid and blend: `job(y0, x0, th, tw)` gives the
/// output of that latent window, [C, th * scale, tw * scale] values (scale: output units
/// per latent).
fn blend(
    h: usize,
    w: usize,
    scale: usize,
    channels: usize,
    plan: TilePlan,
    job: &mut dyn FnMut(usize, usize, usize, usize) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let (oh, ow) = (h * scale, w * scale);
    let mut acc = vec![0.0f32; channels * oh * ow];
    let mut norm = vec![0.0f32; oh * ow];
    let ys = starts(h, plan.tile, plan.overlap);
    let xs = starts(w, plan.tile, plan.overlap);
    let span = |s: &[usize], k: usize, len: usize| {
        let a = s[k];
        (a, (a + plan.tile).min(len))
    };
    for ky in 0..ys.len() {
        for kx in 0..xs.len() {
            let (y0, y1) = span(&ys, ky, h);
            let (x0, x1) = span(&xs, kx, w);
            let tile = job(y0, x0, y1 - y0, x1 - x0)?;
            let (th, tw) = ((y1 - y0) * scale, (x1 - x0) * scale);
            let edges = |s: &[usize], k: usize, len: usize| {
                let prev = (k > 0).then(|| span(s, k - 1, len).1 * scale);
                let next = (k + 1 < s.len()).then(|| s[k + 1] * scale);
                (prev, next)
            };
            let (py, ny) = edges(&ys, ky, h);
            let (px, nx) = edges(&xs, kx, w);
            for ty in 0..th {
                let y = y0 * scale + ty;
                let wy = ramp(y, (y0 * scale, y1 * scale), py, ny);
                for tx in 0..tw {
                    let x = x0 * scale + tx;
                    let wt = wy * ramp(x, (x0 * scale, x1 * scale), px, nx);
                    norm[y * ow + x] += wt;
                    for c in 0..channels {
                        acc[(c * oh + y) * ow + x] += wt * tile[(c * th + ty) * tw + tx];
                    }
                }
            }
        }
    }
    for c in 0..channels {
        for (a, n) in acc[c * oh * ow..(c + 1) * oh * ow].iter_mut().zip(&norm) {
            *a /= n;
        }
    }
    Ok(acc)
}

/// Decode model latents [B, C, h, w] to images [B, 3, f h, f w] on the host, one sample at a
/// time, tiled by `plan` when given.
pub fn decode(
    gpu: &Gpu,
    vae: &Vae,
    latents: &HostTensor,
    plan: Option<TilePlan>,
) -> Result<HostTensor> {
    vae.check_latents(&latents.shape)?;
    let [b, c, h, w] = latents.shape[..] else {
        unreachable!("checked")
    };
    let f = vae.config.factor();
    let oc = vae.config.out_channels;
    let mut out = Vec::with_capacity(b * oc * h * w * f * f);
    for s in 0..b {
        let sample = latents.rows(s..s + 1);
        let mut job = |y0: usize, x0: usize, th: usize, tw: usize| -> Result<Vec<f32>> {
            let mut data = Vec::with_capacity(c * th * tw);
            for ch in 0..c {
                for y in y0..y0 + th {
                    let row = (ch * h + y) * w;
                    data.extend_from_slice(&sample.data[row + x0..row + x0 + tw]);
                }
            }
            let t = HostTensor::new(vec![1, c, th, tw], data).upload(gpu)?;
            Ok(vae.decode(gpu, &t)?.to_vec(gpu)?)
        };
        let image = match plan {
            None => job(0, 0, h, w)?,
            Some(p) => blend(h, w, f, oc, p, &mut job)?,
        };
        out.extend(image);
        gpu.trim_memory();
    }
    Ok(HostTensor::new(vec![b, oc, h * f, w * f], out))
}

/// Encode images [B, 3, H, W] in [-1, 1] to the latent distribution's (mean, logvar), each
/// [B, C, H/f, W/f], on the host, one sample at a time, tiled by `plan` when given.
pub fn encode(
    gpu: &Gpu,
    vae: &Vae,
    images: &HostTensor,
    plan: Option<TilePlan>,
) -> Result<(HostTensor, HostTensor)> {
    let [b, ic, ih, iw] = images.shape[..] else {
        return input(format!("images {:?} must be [B, C, H, W]", images.shape));
    };
    let f = vae.config.factor();
    let (h, w) = (ih / f, iw / f);
    let lc = vae.config.latent_channels;
    let mut mean = Vec::new();
    let mut logvar = Vec::new();
    for s in 0..b {
        let sample = images.rows(s..s + 1);
        let mut job = |y0: usize, x0: usize, th: usize, tw: usize| -> Result<Vec<f32>> {
            let (py, px, ph, pw) = (y0 * f, x0 * f, th * f, tw * f);
            let mut data = Vec::with_capacity(ic * ph * pw);
            for ch in 0..ic {
                for y in py..py + ph {
                    let row = (ch * ih + y) * iw;
                    data.extend_from_slice(&sample.data[row + px..row + px + pw]);
                }
            }
            let t = HostTensor::new(vec![1, ic, ph, pw], data).upload(gpu)?;
            let (m, v) = vae.encode_moments(gpu, &t)?;
            let mut both = m.to_vec(gpu)?;
            both.extend(v.to_vec(gpu)?);
            Ok(both)
        };
        let both = match plan {
            None => job(0, 0, h, w)?,
            Some(p) => blend(h, w, 1, 2 * lc, p, &mut job)?,
        };
        let (m, v) = both.split_at(lc * h * w);
        mean.extend_from_slice(m);
        logvar.extend_from_slice(v);
        gpu.trim_memory();
    }
    let shape = vec![b, lc, h, w];
    Ok((
        HostTensor::new(shape.clone(), mean),
        HostTensor::new(shape, logvar),
    ))
}

/// Decode with tiling as `mode` and the device decide, saying so when tiles are used.
pub fn decode_planned(
    gpu: &Gpu,
    vae: &Vae,
    latents: &HostTensor,
    mode: TilingMode,
) -> Result<HostTensor> {
    vae.check_latents(&latents.shape)?;
    let (h, w) = (latents.shape[2], latents.shape[3]);
    let (tiles, reason) = plan(gpu, mode, h, w, &|a, b| decode_bytes(vae, a, b))?;
    if let Some(p) = tiles {
        eprintln!(
            "VAE tiling: decoding in tiles of {0}x{0} latents overlapping by {1} ({reason})",
            p.tile, p.overlap
        );
    }
    decode(gpu, vae, latents, tiles)
}

/// Encode with tiling as `mode` and the device decide, saying so when tiles are used.
pub fn encode_planned(
    gpu: &Gpu,
    vae: &Vae,
    images: &HostTensor,
    mode: TilingMode,
) -> Result<(HostTensor, HostTensor)> {
    let f = vae.config.factor();
    let (h, w) = (images.shape[2] / f, images.shape[3] / f);
    let (tiles, reason) = plan(gpu, mode, h, w, &|a, b| encode_bytes(vae, a * f, b * f))?;
    if let Some(p) = tiles {
        eprintln!(
            "VAE tiling: encoding in tiles of {0}x{0} latents overlapping by {1} ({reason})",
            p.tile, p.overlap
        );
    }
    encode(gpu, vae, images, tiles)
}
