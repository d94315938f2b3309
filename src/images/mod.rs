//! Pixels in and out: decoded tensors to 8-bit RGB and PNG files carrying the generation
//! parameters (`png`), contact sheets, and images read for the VAE encoder (`load`).

pub mod load;
pub mod metadata;
pub mod output;
pub mod png;

use crate::tensor_file::HostTensor;

/// An 8-bit RGB image, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Sample `index` of decoded images [B, 3, H, W] in [-1, 1] as diffusers' postprocessing
/// makes it: round(255 clamp(x / 2 + 0.5, 0, 1)).
pub fn to_rgb8(images: &HostTensor, index: usize) -> Rgb8 {
    let [_, c, h, w] = images.shape[..] else {
        unreachable!("decoder output is [B, C, H, W]")
    };
    let plane = h * w;
    let base = index * c * plane;
    let mut data = Vec::with_capacity(3 * plane);
    for p in 0..plane {
        for ch in 0..3 {
            let v = images.data[base + ch.min(c - 1) * plane + p];
            data.push(((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    Rgb8 {
        width: w,
        height: h,
        data,
    }
}

/// Gap between contact-sheet cells, in pixels.
const GAP: usize = 4;

/// The images side by side on white, ceil(sqrt(n)) to a row, each cell the largest size.
pub fn contact_sheet(images: &[Rgb8]) -> Rgb8 {
    let n = images.len().max(1);
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
    let rows = n.div_ceil(cols);
    let cw = images.iter().map(|i| i.width).max().unwrap_or(1);
    let ch = images.iter().map(|i| i.height).max().unwrap_or(1);
    let width = cols * cw + (cols - 1) * GAP;
    let height = rows * ch + (rows - 1) * GAP;
    let mut data = vec![255u8; width * height * 3];
    for (k, img) in images.iter().enumerate() {
        let (x0, y0) = ((k % cols) * (cw + GAP), (k / cols) * (ch + GAP));
        for y in 0..img.height {
            let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
            let at = ((y0 + y) * width + x0) * 3;
            data[at..at + src.len()].copy_from_slice(src);
        }
    }
    Rgb8 {
        width,
        height,
        data,
    }
}
