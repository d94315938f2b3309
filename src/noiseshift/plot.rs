//! `--plot`: a PNG with sigma_hat against sigma (grey identity line, blue curve with a dot
//! per step, ticks at 0, 0.5 and 1) on the left and the relative loss reduction per step
//! (bars, step 0 leftmost, percent ticks) on the right, labelled in an 8x8 bitmap font. The
//! summary table printed by `calibrate` carries the exact numbers.

use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;
use image::{ImageFormat, Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::noiseshift::table::Step;
use crate::tensor_file::write_atomic;

const W: u32 = 880;
const H: u32 = 440;
/// Margin around each panel's plot area: room for titles and tick labels.
const PAD: u32 = 44;
/// Glyph cell of the bitmap font.
const GLYPH: u32 = 8;

const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([170, 170, 170]);
const BLUE: Rgb<u8> = Rgb([30, 90, 200]);
const ORANGE: Rgb<u8> = Rgb([220, 120, 40]);

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

/// Draw ASCII `s` with its top-left corner at (x, y); other characters draw as '?'.
fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let code = if ch.is_ascii() { ch } else { '?' };
        let glyph = BASIC_LEGACY[code as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH {
                // Bit 0 is the leftmost pixel of a row.
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + i as u32 * GLYPH + col, y + row as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, color);
                    }
                }
            }
        }
    }
}

/// Width in pixels of `s` in the bitmap font.
fn text_width(s: &str) -> u32 {
    s.chars().count() as u32 * GLYPH
}

/// `s` right-aligned to end at x, vertically centred on y.
fn text_left_of(img: &mut RgbImage, x: u32, y: f64, s: &str) {
    let y = (y - f64::from(GLYPH) / 2.0).max(0.0) as u32;
    text(img, x.saturating_sub(text_width(s)), y, s, BLACK);
}

/// `s` centred horizontally on x, top at y.
fn text_below(img: &mut RgbImage, x: f64, y: u32, s: &str) {
    let x = (x - f64::from(text_width(s)) / 2.0).max(0.0) as u32;
    text(img, x, y, s, BLACK);
}

/// Relative loss reduction (nominal - calibrated) / nominal of each step; 0 where the
/// nominal loss is 0.
fn reductions(steps: &[Step]) -> Vec<f64> {
    steps
        .iter()
        .map(|s| {
            if s.loss_nominal > 0.0 {
                (s.loss_nominal - s.loss_calibrated) / s.loss_nominal
            } else {
                0.0
            }
        })
        .collect()
}

fn render(steps: &[Step]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let side = f64::from(W / 2 - 2 * PAD);
    let height = f64::from(H - 2 * PAD);
    let (bottom, top) = (f64::from(H - PAD), f64::from(PAD));

    // Left panel: unit square, sigma to the right, sigma_hat up.
    let left = f64::from(PAD);
    let to_px = |s: f64, v: f64| (left + s * side, bottom - v * height);
    text(
        &mut img,
        PAD,
        12,
        "sigma_hat vs sigma (grey: identity)",
        BLACK,
    );
    line(&mut img, to_px(0.0, 0.0), to_px(1.0, 0.0), BLACK);
    line(&mut img, to_px(0.0, 0.0), to_px(0.0, 1.0), BLACK);
    for (v, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
        let (x, _) = to_px(v, 0.0);
        line(&mut img, (x, bottom), (x, bottom + 3.0), BLACK);
        text_below(&mut img, x, H - PAD + 6, label);
        let (_, y) = to_px(0.0, v);
        line(&mut img, (left - 3.0, y), (left, y), BLACK);
        text_left_of(&mut img, PAD - 6, y, label);
    }
    text_below(&mut img, left + side / 2.0, H - PAD + 20, "sigma");
    line(&mut img, to_px(0.0, 0.0), to_px(1.0, 1.0), GREY);
    for pair in steps.windows(2) {
        line(
            &mut img,
            to_px(pair[0].sigma, pair[0].sigma_hat),
            to_px(pair[1].sigma, pair[1].sigma_hat),
            BLUE,
        );
    }
    for s in steps {
        let (x, y) = to_px(s.sigma, s.sigma_hat);
        let (x, y) = (x.max(2.0) as u32, y.max(2.0) as u32);
        rect(&mut img, x - 2, y - 2, x + 2, y + 2, BLUE);
    }

    // Right panel: one bar per step, scaled to the largest reduction.
    let left = W / 2 + PAD;
    let reductions = reductions(steps);
    let most = reductions.iter().copied().fold(1e-12, f64::max);
    text(
        &mut img,
        left,
        12,
        "loss reduction at sigma_hat, per step",
        BLACK,
    );
    line(
        &mut img,
        (f64::from(left), bottom),
        (f64::from(W - PAD), bottom),
        BLACK,
    );
    line(
        &mut img,
        (f64::from(left), bottom),
        (f64::from(left), top),
        BLACK,
    );
    for (frac, label) in [
        (0.0, "0%".to_string()),
        (1.0, format!("{:.1}%", most * 100.0)),
    ] {
        let y = bottom - frac * height;
        line(
            &mut img,
            (f64::from(left) - 3.0, y),
            (f64::from(left), y),
            BLACK,
        );
        text_left_of(&mut img, left - 6, y, &label);
    }
    let slot = f64::from(W - PAD - left) / steps.len().max(1) as f64;
    // Label every k-th step so that the numbers do not overlap.
    let widest = text_width(&steps.len().saturating_sub(1).to_string()) + 4;
    let every = (f64::from(widest) / slot).ceil().max(1.0) as usize;
    for (i, r) in reductions.iter().enumerate() {
        let x0 = left + (i as f64 * slot + slot * 0.15) as u32;
        let x1 = left + ((i + 1) as f64 * slot - slot * 0.15) as u32;
        let y = bottom - (r.max(0.0) / most) * height;
        rect(&mut img, x0, y as u32, x1.max(x0), H - PAD - 1, ORANGE);
        if i % every == 0 {
            let centre = f64::from(left) + (i as f64 + 0.5) * slot;
            text_below(&mut img, centre, H - PAD + 6, &i.to_string());
        }
    }
    text_below(
        &mut img,
        f64::from(left) + f64::from(W - PAD - left) / 2.0,
        H - PAD + 20,
        "step",
    );
    img
}

pub fn write(path: &Path, steps: &[Step]) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    render(steps)
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| Error::Failure(format!("encoding {}: {e}", path.display())))?;
    write_atomic(path, bytes.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_the_font_bitmap() {
        let mut img = RgbImage::from_pixel(20, 10, Rgb([255, 255, 255]));
        text(&mut img, 1, 2, "5%", BLACK);
        for (i, ch) in ['5', '%'].into_iter().enumerate() {
            let glyph = BASIC_LEGACY[ch as usize];
            for row in 0..8u32 {
                for col in 0..8u32 {
                    let set = glyph[row as usize] & (1 << col) != 0;
                    let px = img.get_pixel(1 + i as u32 * 8 + col, 2 + row);
                    assert_eq!(*px == BLACK, set, "{ch} row {row} col {col}");
                }
            }
        }
        // Nothing outside the two cells.
        assert!((0..10).all(|y| *img.get_pixel(0, y) != BLACK));
        assert!((0..20).all(|x| *img.get_pixel(x, 0) != BLACK));
    }

    fn step(sigma: f64, sigma_hat: f64, nominal: f64, calibrated: f64) -> Step {
        Step {
            sigma,
            sigma_next: 0.0,
            sigma_hat,
            loss_nominal: nominal,
            loss_calibrated: calibrated,
            candidates: 1,
            sigma_hat_stderr: 0.0,
            edge: false,
        }
    }

    #[test]
    fn render_puts_dots_and_bars_where_the_data_says() {
        // Reductions 25 % and 50 %: the second bar reaches the top, the first half way.
        let steps = [step(0.9, 0.8, 1.0, 0.75), step(0.4, 0.3, 2.0, 1.0)];
        let img = render(&steps);
        let side = f64::from(W / 2 - 2 * PAD);
        let height = f64::from(H - 2 * PAD);
        for s in &steps {
            let x = (f64::from(PAD) + s.sigma * side) as u32;
            let y = (f64::from(H - PAD) - s.sigma_hat * height) as u32;
            assert_eq!(*img.get_pixel(x, y), BLUE, "dot of sigma {}", s.sigma);
        }
        let (left, bottom) = (W / 2 + PAD, H - PAD);
        let slot = f64::from(W - PAD - left) / 2.0;
        let bar_top = |i: usize| {
            let x = left + ((i as f64 + 0.5) * slot) as u32;
            (PAD..bottom)
                .find(|&y| *img.get_pixel(x, y) == ORANGE)
                .unwrap()
        };
        assert!(bar_top(1).abs_diff(PAD) <= 1, "tallest bar at the top");
        let half = PAD + (height / 2.0) as u32;
        assert!(bar_top(0).abs_diff(half) <= 1, "25 % bar half as tall");
        // Titles drawn above both panels.
        for x0 in [PAD, left] {
            assert!((x0..x0 + 80).any(|x| (12..20).any(|y| *img.get_pixel(x, y) == BLACK)));
        }
    }
}
