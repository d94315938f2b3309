//! Plain-Rust CPU references for every op, accumulating in f64. The kernel tests compare the
//! GPU against these; they are written for clarity, not speed.

use crate::ops::Act;
use crate::ops::layout::PatchOrder;

pub fn activate(x: f64, act: Act) -> f64 {
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    match act {
        Act::None => x,
        Act::GeluTanh => 0.5 * x * (1.0 + (0.7978845608028654 * (x + 0.044715 * x * x * x)).tanh()),
        Act::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        Act::QuickGelu => x * sigmoid(1.702 * x),
        Act::Silu => x * sigmoid(x),
    }
}

/// erf by its Taylor series (small |x|) or continued fraction of erfc (large |x|); accurate to
/// ~1e-15, independent of the shader's approximation.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let r = if z < 3.0 {
        let mut term = z;
        let mut sum = z;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...))))
        let mut f = z;
        for k in (1..60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        1.0 - (-z * z).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

/// y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]).
pub fn linear(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
    act: Act,
) -> Vec<f32> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = b.map_or(0.0, |b| f64::from(b[j]));
            for t in 0..k {
                acc += f64::from(x[i * k + t]) * f64::from(w[j * k + t]);
            }
            y[i * n + j] = activate(acc, act) as f32;
        }
    }
    y
}

/// One source of attention rows: data [B * len, stride], with columns at the offsets.
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub len: usize,
    pub stride: usize,
}

/// softmax(q k^T * scale) v per sample and head; keys/values are the concatenation of the
/// sources, (source, k offset, v offset). Output [B, Lq, heads * d].
pub fn attention(
    q: &Rows<'_>,
    q_off: usize,
    kv: &[(&Rows<'_>, usize, usize)],
    batch: usize,
    heads: usize,
    d: usize,
    scale: f64,
) -> Vec<f32> {
    attention_scored(q, q_off, kv, [batch, heads, d], scale, false, None)
}

/// [`attention`] (`shape` = batch, heads, d) with the scores changed first: `causal` drops
/// keys after the query (t > i), `bias` [heads, Lq, Lk] is added.
pub fn attention_scored(
    q: &Rows<'_>,
    q_off: usize,
    kv: &[(&Rows<'_>, usize, usize)],
    [batch, heads, d]: [usize; 3],
    scale: f64,
    causal: bool,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let lk: usize = kv.iter().map(|(src, _, _)| src.len).sum();
    let mut out = vec![0.0; batch * q.len * heads * d];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..q.len {
                let qrow = &q.data[(b * q.len + i) * q.stride + q_off + h * d..][..d];
                let mut scores = Vec::new();
                let mut values = Vec::new();
                for (src, k_off, v_off) in kv {
                    for t in 0..src.len {
                        let row = (b * src.len + t) * src.stride;
                        let k = &src.data[row + k_off + h * d..][..d];
                        let s: f64 = qrow
                            .iter()
                            .zip(k)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum();
                        let key = scores.len();
                        let b = bias.map_or(0.0, |t| f64::from(t[(h * q.len + i) * lk + key]));
                        scores.push(if causal && key > i {
                            f64::NEG_INFINITY
                        } else {
                            s * scale + b
                        });
                        values.push(&src.data[row + v_off + h * d..][..d]);
                    }
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let o = &mut out[(b * q.len + i) * heads * d + h * d..][..d];
                for (j, oj) in o.iter_mut().enumerate() {
                    let acc: f64 = e
                        .iter()
                        .zip(&values)
                        .map(|(p, v)| p * f64::from(v[j]))
                        .sum();
                    *oj = (acc / sum) as f32;
                }
            }
        }
    }
    out
}

/// Mean and 1/sqrt(var + eps) of a row, in f64.
fn stats(row: &[f32], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// LayerNorm rows of length d, optional affine, optional modulation rows (per sample of
/// `tokens` rows; shift/scale at column offsets of a row of `mod_stride`).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    x: &[f32],
    d: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    modulation: Option<(&[f32], usize, usize, usize, usize)>,
    eps: f64,
) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for (r, (row, out)) in x.chunks(d).zip(y.chunks_mut(d)).enumerate() {
        let (mean, rstd) = stats(row, eps);
        for i in 0..d {
            let mut v = (f64::from(row[i]) - mean) * rstd;
            if let Some(w) = weight {
                v *= f64::from(w[i]);
            }
            if let Some(b) = bias {
                v += f64::from(b[i]);
            }
            if let Some((table, tokens, stride, shift, scale)) = modulation {
                let m = (r / tokens) * stride;
                v = v * (1.0 + f64::from(table[m + scale + i])) + f64::from(table[m + shift + i]);
            }
            out[i] = v as f32;
        }
    }
    y
}

/// RMSNorm of every segment of length d at columns col_off + s*d of rows of `stride`.
pub fn rms_norm_heads(
    x: &[f32],
    stride: usize,
    col_off: usize,
    heads: usize,
    d: usize,
    w: &[f32],
    eps: f64,
) -> Vec<f32> {
    let mut y = x.to_vec();
    for r in 0..x.len() / stride {
        for h in 0..heads {
            let base = r * stride + col_off + h * d;
            let seg = &x[base..base + d];
            let ms = seg.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / d as f64;
            let rr = 1.0 / (ms + eps).sqrt();
            for j in 0..d {
                y[base + j] = (f64::from(seg[j]) * rr * f64::from(w[j])) as f32;
            }
        }
    }
    y
}

/// GroupNorm NCHW then `act`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    c: usize,
    hw: usize,
    groups: usize,
    w: &[f32],
    b: &[f32],
    eps: f64,
    act: Act,
) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    let cpg = c / groups;
    // Each group of each sample is one contiguous span; span i is group i mod groups.
    for (g, (data, out)) in x.chunks(cpg * hw).zip(y.chunks_mut(cpg * hw)).enumerate() {
        let (mean, rstd) = stats(data, eps);
        for (i, o) in out.iter_mut().enumerate() {
            let ch = (g % groups) * cpg + i / hw;
            *o = activate(
                (f64::from(data[i]) - mean) * rstd * f64::from(w[ch]) + f64::from(b[ch]),
                act,
            ) as f32;
        }
    }
    y
}

/// x * (1 + scale) + shift with per-sample modulation rows.
pub fn modulate(
    x: &[f32],
    d: usize,
    tokens: usize,
    table: &[f32],
    stride: usize,
    shift: usize,
    scale: usize,
) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let m = (i / (d * tokens)) * stride + i % d;
            (f64::from(v) * (1.0 + f64::from(table[m + scale])) + f64::from(table[m + shift]))
                as f32
        })
        .collect()
}

/// x + gate * y with per-sample gate rows.
pub fn gated_residual(
    x: &[f32],
    y: &[f32],
    d: usize,
    tokens: usize,
    table: &[f32],
    stride: usize,
    gate: usize,
) -> Vec<f32> {
    x.iter()
        .zip(y)
        .enumerate()
        .map(|(i, (&a, &b))| {
            let m = (i / (d * tokens)) * stride + i % d;
            (f64::from(a) + f64::from(table[m + gate]) * f64::from(b)) as f32
        })
        .collect()
}

/// conv2d NCHW with per-side padding.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    [n, cin, h, wd]: [usize; 4],
    [cout, kh, kw]: [usize; 3],
    stride: usize,
    [pt, pl, pb, pr]: [usize; 4],
) -> (Vec<f32>, usize, usize) {
    let oh = (h + pt + pb - kh) / stride + 1;
    let ow = (wd + pl + pr - kw) / stride + 1;
    let mut y = vec![0.0; n * cout * oh * ow];
    for bi in 0..n {
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| f64::from(b[co]));
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pt as isize;
                                let ix = (ox * stride + kx) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((bi * cin + ci) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((co * cin + ci) * kh + ky) * kw + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    y[((bi * cout + co) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    (y, oh, ow)
}

/// Nearest x2 upsampling of planes of h x w.
pub fn upsample_nearest2x(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len() * 4);
    for plane in x.chunks(h * w) {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                y.push(plane[(oy / 2) * w + ox / 2]);
            }
        }
    }
    y
}

/// RoPE on adjacent pairs of every head segment; row r uses table row r mod tokens.
pub fn rope(
    x: &[f32],
    stride: usize,
    col_off: usize,
    heads: usize,
    d: usize,
    cos: &[f32],
    sin: &[f32],
) -> Vec<f32> {
    let half = d / 2;
    let tokens = cos.len() / half;
    let mut y = x.to_vec();
    for r in 0..x.len() / stride {
        for h in 0..heads {
            for j in 0..half {
                let base = r * stride + col_off + h * d + 2 * j;
                let t = (r % tokens) * half + j;
                let (a, b) = (f64::from(x[base]), f64::from(x[base + 1]));
                let (c, s) = (f64::from(cos[t]), f64::from(sin[t]));
                y[base] = (a * c - b * s) as f32;
                y[base + 1] = (a * s + b * c) as f32;
            }
        }
    }
    y
}

/// Sum of squared differences per group of rows, b repeating over a's rows.
pub fn squared_error_groups(a: &[f32], b: &[f32], cols: usize, group_rows: usize) -> Vec<f64> {
    let rows_b = b.len() / cols;
    a.chunks(cols * group_rows)
        .enumerate()
        .map(|(g, chunk)| {
            chunk
                .chunks(cols)
                .enumerate()
                .map(|(r, row)| {
                    let brow = &b[((g * group_rows + r) % rows_b) * cols..][..cols];
                    row.iter()
                        .zip(brow)
                        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                        .sum::<f64>()
                })
                .sum()
        })
        .collect()
}

/// [B, C, H, W] -> [B, tokens, p*p*C].
pub fn patchify(x: &[f32], [b, c, h, w]: [usize; 4], p: usize, order: PatchOrder) -> Vec<f32> {
    let (gh, gw) = (h / p, w / p);
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for ty in 0..gh {
            for tx in 0..gw {
                let token = bi * gh * gw + ty * gw + tx;
                for ch in 0..c {
                    for py in 0..p {
                        for px in 0..p {
                            let f = match order {
                                PatchOrder::ChannelFirst => (ch * p + py) * p + px,
                                PatchOrder::ChannelLast => (py * p + px) * c + ch,
                            };
                            out[token * p * p * c + f] =
                                x[((bi * c + ch) * h + ty * p + py) * w + tx * p + px];
                        }
                    }
                }
            }
        }
    }
    out
}

/// Concatenate [B, L1, D] and [B, L2, D] along tokens.
pub fn concat_tokens(a: &[f32], b: &[f32], batch: usize, d: usize) -> Vec<f32> {
    let (l1, l2) = (a.len() / batch / d, b.len() / batch / d);
    let mut out = Vec::with_capacity(a.len() + b.len());
    for s in 0..batch {
        out.extend_from_slice(&a[s * l1 * d..(s + 1) * l1 * d]);
        out.extend_from_slice(&b[s * l2 * d..(s + 1) * l2 * d]);
    }
    out
}

/// Rows of a grid x grid layout cropped to h x w at (top, left).
pub fn crop_grid(
    src: &[f32],
    d: usize,
    grid: usize,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(h * w * d);
    for i in 0..h {
        for j in 0..w {
            let r = (top + i) * grid + left + j;
            out.extend_from_slice(&src[r * d..(r + 1) * d]);
        }
    }
    out
}

/// softmax(scale * row) of every row of length `cols`.
pub fn softmax_rows(x: &[f32], cols: usize, scale: f64) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let s: Vec<f64> = row.iter().map(|&v| f64::from(v) * scale).collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = s.iter().map(|v| (v - max).exp()).sum();
        y.extend(s.iter().map(|v| ((v - max).exp() / sum) as f32));
    }
    y
}

/// [B, R, C] -> [B, C, R].
pub fn transpose(x: &[f32], b: usize, r: usize, c: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for bi in 0..b {
        for ri in 0..r {
            for ci in 0..c {
                y[(bi * c + ci) * r + ri] = x[(bi * r + ri) * c + ci];
            }
        }
    }
    y
}
