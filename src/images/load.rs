//! Images for the VAE encoder, as diffusers' VaeImageProcessor prepares them with
//! `resize_mode="crop"`: RGB (RGBA composited on white, grey replicated), resized with
//! Lanczos3 (fast_image_resize, whose 8-bit convolution follows Pillow's; the `image` crate's
//! resampler differed from PIL's by up to 5e-3 of the encoded latents) so that the image covers the target (sides floor(w h' / h) or floor(h w' / w) as
//! PIL's paste arithmetic has them), centre-cropped, then scaled to [-1, 1]. Anything but
//! 8 bits per channel is refused, so that a 16-bit file is never silently truncated.

use std::path::Path;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageReader, RgbImage};

use crate::error::{Result, input};

/// Pixels [3, height, width] in [-1, 1], and whether the image had to be enlarged.
pub struct Prepared {
    pub pixels: Vec<f32>,
    pub upscaled: bool,
}

/// Decode `path` and flatten it to 8-bit RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let (file, _) = crate::files::open_regular(path)?;
    let reader = ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| crate::error::Error::read(path, e))?;
    let image = reader.decode().map_err(|e| {
        crate::error::Error::Input(format!("{}: cannot decode: {e}", path.display()))
    })?;
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(_) => image.to_rgb8(),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgba8(_) => {
            let rgba = image.to_rgba8();
            RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                let p = rgba.get_pixel(x, y).0;
                let a = u32::from(p[3]);
                // Over white: c a + 255 (1 - a), rounded, in integers.
                let over = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
                image::Rgb([over(p[0]), over(p[1]), over(p[2])])
            })
        }
        other => {
            return input(format!(
                "{}: {:?} images are not supported (8-bit grey, RGB or RGBA only)",
                path.display(),
                other.color()
            ));
        }
    })
}

/// `rgb` resized to cover width x height and centre-cropped to it.
pub fn prepare(rgb: &RgbImage, width: usize, height: usize) -> Prepared {
    let (sw, sh) = (rgb.width() as usize, rgb.height() as usize);
    // diffusers' _resize_and_crop: fit the side that leaves the other one too long.
    let (rw, rh) = if width * sh > height * sw {
        (width, sh * width / sw)
    } else {
        (sw * height / sh, height)
    };
    let resized = resize(rgb, rw, rh);
    let (x0, y0) = (rw / 2 - width / 2, rh / 2 - height / 2);
    let mut pixels = vec![0.0f32; 3 * width * height];
    for y in 0..height {
        for x in 0..width {
            let at = ((y0 + y) * rw + x0 + x) * 3;
            for c in 0..3 {
                pixels[(c * height + y) * width + x] =
                    f32::from(resized[at + c]) / 255.0 * 2.0 - 1.0;
            }
        }
    }
    Prepared {
        pixels,
        upscaled: rw > sw || rh > sh,
    }
}

/// RGB bytes of `rgb` resized to w x h with Lanczos3 (the copy when the size is unchanged).
fn resize(rgb: &RgbImage, w: usize, h: usize) -> Vec<u8> {
    if (w, h) == (rgb.width() as usize, rgb.height() as usize) {
        return rgb.as_raw().clone();
    }
    let src = Image::from_vec_u8(
        rgb.width(),
        rgb.height(),
        rgb.as_raw().clone(),
        PixelType::U8x3,
    )
    .expect("an RgbImage holds width x height x 3 bytes");
    let mut dst = Image::new(w as u32, h as u32, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("source and destination are both U8x3");
    dst.into_vec()
}
