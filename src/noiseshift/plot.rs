//! `--plot`: a PNG with sigma_hat against sigma (grey identity line, blue curve with a dot
//! per step) on the left and the relative loss reduction per step (bars, step 0 leftmost) on
//! the right. No text: the axes run from 0 to 1 on the left, from 0 to the largest reduction
//! on the right; the summary table printed by `calibrate` carries the numbers.

use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::noiseshift::table::Step;
use crate::tensor_file::write_atomic;

const W: u32 = 800;
const H: u32 = 400;
const PAD: u32 = 30;

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, color);
        }
    }
}

fn rect(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, color: Rgb<u8>) {
    for x in x0.min(x1)..=x0.max(x1) {
        for y in y0.min(y1)..=y0.max(y1) {
            if x < img.width() && y < img.height() {
                img.put_pixel(x, y, color);
            }
        }
    }
}

pub fn write(path: &Path, steps: &[Step]) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let axis = Rgb([0, 0, 0]);
    let side = (W / 2 - 2 * PAD) as f64;
    let height = (H - 2 * PAD) as f64;
    // Left panel: unit square, sigma to the right, sigma_hat up.
    let to_px = |s: f64, v: f64| (PAD as f64 + s * side, (H - PAD) as f64 - v / 1.0 * height);
    line(&mut img, to_px(0.0, 0.0), to_px(1.0, 0.0), axis);
    line(&mut img, to_px(0.0, 0.0), to_px(0.0, 1.0), axis);
    line(
        &mut img,
        to_px(0.0, 0.0),
        to_px(1.0, 1.0),
        Rgb([170, 170, 170]),
    );
    let blue = Rgb([30, 90, 200]);
    for pair in steps.windows(2) {
        line(
            &mut img,
            to_px(pair[0].sigma, pair[0].sigma_hat),
            to_px(pair[1].sigma, pair[1].sigma_hat),
            blue,
        );
    }
    for s in steps {
        let (x, y) = to_px(s.sigma, s.sigma_hat);
        rect(
            &mut img,
            x as u32 - 2,
            y.max(2.0) as u32 - 2,
            x as u32 + 2,
            y as u32 + 2,
            blue,
        );
    }
    // Right panel: bars of (loss_nominal - loss_calibrated) / loss_nominal.
    let left = W / 2 + PAD;
    let reductions: Vec<f64> = steps
        .iter()
        .map(|s| {
            if s.loss_nominal > 0.0 {
                (s.loss_nominal - s.loss_calibrated) / s.loss_nominal
            } else {
                0.0
            }
        })
        .collect();
    let top = reductions.iter().copied().fold(1e-12, f64::max);
    line(
        &mut img,
        (left as f64, (H - PAD) as f64),
        ((W - PAD) as f64, (H - PAD) as f64),
        axis,
    );
    line(
        &mut img,
        (left as f64, (H - PAD) as f64),
        (left as f64, PAD as f64),
        axis,
    );
    let slot = (W - PAD - left) as f64 / steps.len().max(1) as f64;
    for (i, r) in reductions.iter().enumerate() {
        let x0 = left + (i as f64 * slot + slot * 0.15) as u32;
        let x1 = left + ((i + 1) as f64 * slot - slot * 0.15) as u32;
        let y = (H - PAD) as f64 - (r.max(0.0) / top) * height;
        rect(
            &mut img,
            x0,
            y as u32,
            x1.max(x0),
            H - PAD - 1,
            Rgb([220, 120, 40]),
        );
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| Error::Failure(format!("encoding {}: {e}", path.display())))?;
    write_atomic(path, bytes.get_ref())
}
