//! PNG files with text chunks (tEXt where the text is Latin-1, else iTXt), written
//! atomically: encoded in memory, then a temporary file and a rename.

use std::path::Path;

use crate::error::{Error, Result};
use crate::images::Rgb8;
use crate::tensor_file::write_atomic;

/// Write `image` to `path` with `(keyword, text)` chunks.
pub fn write(path: &Path, image: &Rgb8, text: &[(String, String)]) -> Result<()> {
    let fail =
        |e: ::png::EncodingError| Error::Failure(format!("encoding {}: {e}", path.display()));
    let mut bytes = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
        enc.set_color(::png::ColorType::Rgb);
        enc.set_depth(::png::BitDepth::Eight);
        for (key, value) in text {
            if value.chars().all(|c| (c as u32) < 256) {
                enc.add_text_chunk(key.clone(), value.clone())
                    .map_err(fail)?;
            } else {
                enc.add_itxt_chunk(key.clone(), value.clone())
                    .map_err(fail)?;
            }
        }
        let mut writer = enc.write_header().map_err(fail)?;
        writer.write_image_data(&image.data).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    write_atomic(path, &bytes)
}
