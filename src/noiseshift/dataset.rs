//! Calibration data: a safetensors file with `x0` [N, C, h, w] (clean latents, already scaled
//! as the model sees them), optional `noise` of the same shape (else seeded Gaussian), and the
//! conditioning `prompt_embeds` [N or 1, L, D] and `pooled_prompt_embeds` [N or 1, P] (optional
//! `negative_*` for guidance). Every shape is checked against the model and the resolution.

use std::path::Path;

use crate::error::{Result, input};
use crate::noise::seeded_noise;
use crate::tensor_file::{self, HostTensor};

pub struct Dataset {
    pub x0: HostTensor,
    pub noise: HostTensor,
    pub embeds: HostTensor,
    pub pooled: HostTensor,
    pub negative: Option<(HostTensor, HostTensor)>,
    /// Where the data came from, for the table.
    pub description: String,
}

/// What the model expects of the data.
pub struct Expect {
    pub channels: usize,
    pub latent_h: usize,
    pub latent_w: usize,
    pub joint_dim: usize,
    pub pooled_dim: usize,
}

/// A conditioning tensor: `rank` dims, batch n (one per sample) or 1 (shared), width `last`.
fn check_text(
    path: &Path,
    name: &str,
    t: &HostTensor,
    n: usize,
    rank: usize,
    last: usize,
) -> Result<()> {
    let ok =
        t.shape.len() == rank && (t.shape[0] == n || t.shape[0] == 1) && t.shape[rank - 1] == last;
    if !ok {
        let want = if rank == 3 {
            format!("[{n} or 1, L, {last}]")
        } else {
            format!("[{n} or 1, {last}]")
        };
        return input(format!(
            "{}: {name} {:?} must be {want}",
            path.display(),
            t.shape
        ));
    }
    Ok(())
}

impl Dataset {
    /// Check data built elsewhere (an images folder) against the model, as `load` does.
    pub fn check(&self, expect: &Expect) -> Result<()> {
        let here = Path::new("the images' embeddings");
        let n = self.x0.shape[0];
        check_text(here, "prompt_embeds", &self.embeds, n, 3, expect.joint_dim)?;
        check_text(
            here,
            "pooled_prompt_embeds",
            &self.pooled,
            n,
            2,
            expect.pooled_dim,
        )?;
        if let Some((e, p)) = &self.negative {
            check_text(here, "negative_prompt_embeds", e, n, 3, expect.joint_dim)?;
            check_text(
                here,
                "negative_pooled_prompt_embeds",
                p,
                n,
                2,
                expect.pooled_dim,
            )?;
        }
        Ok(())
    }

    /// Load `path`, keeping the first `samples` samples (all when None).
    pub fn load(
        path: &Path,
        samples: Option<usize>,
        seed: u64,
        expect: &Expect,
    ) -> Result<Dataset> {
        let mut t = tensor_file::read(path)?;
        let x0 = tensor_file::take(&mut t, "x0", path)?;
        let [n, c, h, w] = x0.shape[..] else {
            return input(format!(
                "{}: x0 {:?} must be [N, C, h, w]",
                path.display(),
                x0.shape
            ));
        };
        if n == 0 {
            return input(format!("{}: x0 holds no samples", path.display()));
        }
        if c != expect.channels {
            return input(format!(
                "{}: x0 has {c} channels, the model's latents have {}",
                path.display(),
                expect.channels
            ));
        }
        if (h, w) != (expect.latent_h, expect.latent_w) {
            return input(format!(
                "{}: x0 latents are {w}x{h} ({}x{} px), which does not match the requested {}x{} px",
                path.display(),
                8 * w,
                8 * h,
                8 * expect.latent_w,
                8 * expect.latent_h
            ));
        }
        let noise = match t.remove("noise") {
            Some(e) if e.shape == x0.shape => e,
            Some(e) => {
                return input(format!(
                    "{}: noise {:?} must match x0 {:?}",
                    path.display(),
                    e.shape,
                    x0.shape
                ));
            }
            None => seeded_noise(seed, &x0.shape),
        };
        let need = |t: &mut std::collections::HashMap<String, HostTensor>, name: &str| {
            tensor_file::take(t, name, path).map_err(|e| {
                crate::error::Error::Input(format!(
                    "{e}: the dataset must carry the prompt embeddings (running text encoders is not supported yet)"
                ))
            })
        };
        let embeds = need(&mut t, "prompt_embeds")?;
        let pooled = need(&mut t, "pooled_prompt_embeds")?;
        check_text(path, "prompt_embeds", &embeds, n, 3, expect.joint_dim)?;
        check_text(
            path,
            "pooled_prompt_embeds",
            &pooled,
            n,
            2,
            expect.pooled_dim,
        )?;
        let negative = match (
            t.remove("negative_prompt_embeds"),
            t.remove("negative_pooled_prompt_embeds"),
        ) {
            (Some(e), Some(p)) => {
                check_text(path, "negative_prompt_embeds", &e, n, 3, expect.joint_dim)?;
                check_text(
                    path,
                    "negative_pooled_prompt_embeds",
                    &p,
                    n,
                    2,
                    expect.pooled_dim,
                )?;
                Some((e, p))
            }
            (None, None) => None,
            _ => {
                return input(format!(
                    "{}: negative_prompt_embeds and negative_pooled_prompt_embeds go together",
                    path.display()
                ));
            }
        };
        let keep = match samples {
            None => n,
            Some(0) => return input("--samples must be at least 1"),
            Some(k) if k > n => {
                return input(format!(
                    "--samples {k} asks for more than the {n} samples in {}",
                    path.display()
                ));
            }
            Some(k) => k,
        };
        let first = |t: HostTensor| if t.shape[0] == 1 { t } else { t.rows(0..keep) };
        Ok(Dataset {
            description: format!("{} (first {keep} of {n} samples)", path.display()),
            x0: x0.rows(0..keep),
            noise: noise.rows(0..keep),
            embeds: first(embeds),
            pooled: first(pooled),
            negative: negative.map(|(e, p)| (first(e), first(p))),
        })
    }
}
