//! Writing decoded images: FILE.png for one image, FILE-0.png .. FILE-(N-1).png for N, and
//! with `grid` FILE-grid.png beside them; each with its own text chunks.

use std::path::{Path, PathBuf};

use crate::error::{Result, input};
use crate::images::{Rgb8, contact_sheet, png, to_rgb8};
use crate::tensor_file::HostTensor;

/// The file for image `index` of `count` written to `out`.
pub fn numbered(out: &Path, index: usize, count: usize) -> PathBuf {
    if count == 1 {
        return out.to_path_buf();
    }
    sibling(out, &index.to_string())
}

/// `out` with `-suffix` before its extension.
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let ext = out
        .extension()
        .map_or_else(|| "png".into(), |e| e.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{suffix}.{ext}"))
}

/// Refuse an output path that is not a .png file name, before any work is done.
pub fn check_out(out: &Path) -> Result<()> {
    let png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png || out.file_name().is_none() {
        return input(format!("--out {}: must be a .png file name", out.display()));
    }
    Ok(())
}

/// Write every image of `images` [B, 3, H, W] (in [-1, 1]) with `text(r)` as its chunks,
/// and the contact sheet when `grid` (with `text(None)`); returns the paths written.
pub fn write_all(
    out: &Path,
    images: &HostTensor,
    grid: bool,
    text: &dyn Fn(Option<usize>) -> Vec<(String, String)>,
) -> Result<Vec<PathBuf>> {
    let count = images.shape[0];
    let mut written = Vec::new();
    let mut all: Vec<Rgb8> = Vec::new();
    for r in 0..count {
        let img = to_rgb8(images, r);
        let path = numbered(out, r, count);
        png::write(&path, &img, &text(Some(r)))?;
        written.push(path);
        all.push(img);
    }
    if grid {
        let path = sibling(out, "grid");
        png::write(&path, &contact_sheet(&all), &text(None))?;
        written.push(path);
    }
    Ok(written)
}
