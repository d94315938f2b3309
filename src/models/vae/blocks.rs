//! The VAE's building blocks as op calls: convolutions, GroupNorm (+ SiLU), ResNet blocks
//! with 1x1 shortcuts, and the mid-block single-head attention over every pixel, computed
//! from matmuls (head dims up to 512, past the fused attention kernel's) in query chunks
//! whose scores fit one binding. Each forward drops its intermediates as soon as they are
//! consumed, so pooled buffers are reused at once.

use noiseshift_kernels::ops::conv::ConvGeometry;
use noiseshift_kernels::ops::{self, Act};
use noiseshift_kernels::{Gpu, Matrix, MatrixLayout, Tensor};

use crate::error::{Error, Result, input};
use crate::models::linear::load_vector;
use crate::models::vae::keys::{AttnPart, Block, Side, VaeKeys};
use crate::weights::WeightSet;

const EPS: f32 = 1e-6;

/// A convolution: the kernel [Cout, Cin, kh, kw] as a matrix [Cout, Cin kh kw] in its stored
/// dtype, the bias widened to f32.
pub struct Conv {
    weight: Matrix,
    bias: Option<Tensor>,
    geometry: ConvGeometry,
    pub cin: usize,
    pub cout: usize,
}

impl Conv {
    /// `name.weight` of shape [cout, cin, k, k] (or [cout, cin] / [cout, cin, 1] for 1x1),
    /// checked, and `name.bias` [cout] when present.
    pub fn load(
        gpu: &Gpu,
        w: &WeightSet,
        name: &str,
        [cout, cin, k]: [usize; 3],
        geometry: ConvGeometry,
    ) -> Result<Conv> {
        let t = w.get(&format!("{name}.weight"))?;
        let flat = [cout, cin, k, k];
        let ok =
            t.shape == flat || (k == 1 && (t.shape == [cout, cin] || t.shape == [cout, cin, 1]));
        if !ok {
            return input(format!(
                "tensor '{}' in {} has shape {:?}, expected {flat:?}",
                t.name,
                t.path.display(),
                t.shape
            ));
        }
        let weight = Matrix::upload(
            gpu,
            cout,
            cin * k * k,
            t.dtype,
            &[t.bytes],
            MatrixLayout::Auto,
        )
        .map_err(|e| Error::Input(format!("tensor '{}' in {}: {e}", t.name, t.path.display())))?;
        let bias_name = format!("{name}.bias");
        let bias = if w.contains(&bias_name) {
            Some(load_vector(gpu, w, &bias_name, cout)?)
        } else {
            None
        };
        Ok(Conv {
            weight,
            bias,
            geometry,
            cin,
            cout,
        })
    }

    /// 3x3, stride 1, padding 1.
    pub fn same(gpu: &Gpu, w: &WeightSet, name: &str, cin: usize, cout: usize) -> Result<Conv> {
        Conv::load(gpu, w, name, [cout, cin, 3], ConvGeometry::square(3, 1, 1))
    }

    pub fn pointwise(
        gpu: &Gpu,
        w: &WeightSet,
        name: &str,
        cin: usize,
        cout: usize,
    ) -> Result<Conv> {
        Conv::load(gpu, w, name, [cout, cin, 1], ConvGeometry::square(1, 1, 0))
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
        Ok(ops::conv::conv2d(
            gpu,
            x,
            &self.weight,
            self.bias.as_ref(),
            self.geometry,
        )?)
    }

    /// The weights as a linear layer over channels (1x1 convs on token rows).
    fn linear(&self, gpu: &Gpu, rows: &Tensor) -> Result<Tensor> {
        Ok(ops::matmul::linear(
            gpu,
            rows,
            &self.weight,
            self.bias.as_ref(),
            Act::None,
        )?)
    }
}

/// GroupNorm with affine weight and bias, then an optional activation.
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl Norm {
    pub fn load(gpu: &Gpu, w: &WeightSet, name: &str, c: usize, groups: usize) -> Result<Norm> {
        Ok(Norm {
            weight: load_vector(gpu, w, &format!("{name}.weight"), c)?,
            bias: load_vector(gpu, w, &format!("{name}.bias"), c)?,
            groups,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor, act: Act) -> Result<Tensor> {
        Ok(ops::norm::group_norm(
            gpu,
            x,
            self.groups,
            &self.weight,
            &self.bias,
            EPS,
            act,
        )?)
    }
}

/// x + conv2(silu(norm2(conv1(silu(norm1(x)))))), x through a 1x1 conv when widths differ.
pub struct Resnet {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl Resnet {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        gpu: &Gpu,
        w: &WeightSet,
        keys: &VaeKeys,
        side: Side,
        block: Block,
        cin: usize,
        cout: usize,
        groups: usize,
    ) -> Result<Resnet> {
        let base = keys.resnet(side, block);
        let shortcut = if cin != cout {
            let name = format!("{base}.{}", keys.shortcut());
            Some(Conv::pointwise(gpu, w, &name, cin, cout)?)
        } else {
            None
        };
        Ok(Resnet {
            norm1: Norm::load(gpu, w, &format!("{base}.norm1"), cin, groups)?,
            conv1: Conv::same(gpu, w, &format!("{base}.conv1"), cin, cout)?,
            norm2: Norm::load(gpu, w, &format!("{base}.norm2"), cout, groups)?,
            conv2: Conv::same(gpu, w, &format!("{base}.conv2"), cout, cout)?,
            shortcut,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
        let mut h = self.norm1.forward(gpu, x, Act::Silu)?;
        h = self.conv1.forward(gpu, &h)?;
        h = self.norm2.forward(gpu, &h, Act::Silu)?;
        h = self.conv2.forward(gpu, &h)?;
        match &self.shortcut {
            Some(s) => Ok(ops::elementwise::add(gpu, &s.forward(gpu, x)?, &h)?),
            None => Ok(ops::elementwise::add(gpu, x, &h)?),
        }
    }
}

/// Bytes of attention scores per query chunk: within one binding, and at most 256 MiB so
/// that the chunk's scores do not dominate memory.
const SCORES_BUDGET: u64 = 256 << 20;

/// x + out(softmax(q k^T / sqrt(C)) v) over all h*w pixels of each sample, single head.
pub struct Attention {
    norm: Norm,
    q: Conv,
    k: Conv,
    v: Conv,
    out: Conv,
    c: usize,
}

impl Attention {
    pub fn load(
        gpu: &Gpu,
        w: &WeightSet,
        keys: &VaeKeys,
        side: Side,
        c: usize,
        groups: usize,
    ) -> Result<Attention> {
        let conv = |part| Conv::pointwise(gpu, w, &keys.attn(side, part), c, c);
        Ok(Attention {
            norm: Norm::load(gpu, w, &keys.attn(side, AttnPart::Norm), c, groups)?,
            q: conv(AttnPart::Q)?,
            k: conv(AttnPart::K)?,
            v: conv(AttnPart::V)?,
            out: conv(AttnPart::Out)?,
            c,
        })
    }

    /// Query rows per chunk for `keys` keys: scores [rows, keys] f32 within the budget.
    pub fn chunk_rows(gpu: &Gpu, keys: usize) -> usize {
        let budget = gpu.max_binding().min(SCORES_BUDGET);
        ((budget / (keys as u64 * 4).max(1)) as usize).clamp(1, keys.max(1))
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
        let [b, c, h, w] = *x.shape() else {
            return input(format!(
                "attention input {:?} is not [B, C, H, W]",
                x.shape()
            ));
        };
        let l = h * w;
        let hn = self.norm.forward(gpu, x, Act::None)?;
        // Values as [C, L] per sample (NCHW itself); queries and keys as token rows [L, C].
        let v = self.v.forward(gpu, &hn)?.reshape(&[b, c, l])?;
        let tokens = ops::layout::transpose(gpu, &hn.reshape(&[b, c, l])?)?.reshape(&[b * l, c])?;
        drop(hn);
        let q = self.q.linear(gpu, &tokens)?;
        let k = self.k.linear(gpu, &tokens)?;
        drop(tokens);
        let o = Tensor::empty(gpu, &[b * l, c], noiseshift_kernels::DType::F32)?;
        let scale = 1.0 / (self.c as f32).sqrt();
        let per = Attention::chunk_rows(gpu, l);
        for s in 0..b {
            let keys = Matrix::from_tensor(ops::layout::take_rows(gpu, &k, s * l..(s + 1) * l)?)?;
            let values =
                Matrix::from_tensor(ops::layout::take_rows(gpu, &v, s..s + 1)?.reshape(&[c, l])?)?;
            for r0 in (0..l).step_by(per) {
                let rows = s * l + r0..s * l + (r0 + per).min(l);
                let first = rows.start;
                let qc = ops::layout::take_rows(gpu, &q, rows)?;
                let scores = ops::matmul::linear(gpu, &qc, &keys, None, Act::None)?;
                drop(qc);
                ops::softmax::softmax_rows(gpu, &scores, scale)?;
                let oc = ops::matmul::linear(gpu, &scores, &values, None, Act::None)?;
                ops::layout::put_rows(gpu, &o, first, &oc)?;
            }
        }
        drop((q, k, v));
        let out = self.out.linear(gpu, &o)?.reshape(&[b, l, c])?;
        drop(o);
        let out = ops::layout::transpose(gpu, &out)?.reshape(&[b, c, h, w])?;
        Ok(ops::elementwise::add(gpu, x, &out)?)
    }
}
