//! Opening the files a user names. Only regular files are read (after following symlinks): a
//! FIFO would block `open` forever, a device such as /dev/zero would never end. Small text and
//! JSON files are also capped in size before they are read, so a huge or lying file cannot
//! make us allocate without bound.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result, input};

/// The most a configuration, tokenizer, index, caption or table file may hold (real
/// tokenizer.json files are 2-3 MB).
pub const TEXT_CAP: u64 = 64 << 20;

/// `path` opened for reading, refused unless it is a regular file; its size.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::read(path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a pipe, socket or device)"
        };
        return input(format!("{} is {what}; expected a file", path.display()));
    }
    let file = File::open(path).map_err(|e| Error::read(path, e))?;
    // The file may have been swapped since the check: judge what was opened.
    let opened = file.metadata().map_err(|e| Error::read(path, e))?;
    if !opened.is_file() {
        return input(format!("{} is not a regular file", path.display()));
    }
    Ok((file, opened.len()))
}

/// The bytes of a regular file of at most `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > cap {
        return input(format!(
            "{} is {len} bytes, more than the {cap} a file of this kind may have",
            path.display()
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // take(): a file that grows while we read stops at the cap too.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::read(path, e))?;
    if bytes.len() as u64 > cap {
        return input(format!(
            "{} grew past {cap} bytes while read",
            path.display()
        ));
    }
    Ok(bytes)
}

/// A UTF-8 text file of at most [`TEXT_CAP`] bytes.
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_capped(path, TEXT_CAP)?)
        .map_err(|_| Error::Input(format!("{} is not UTF-8 text", path.display())))
}

/// A JSON file of at most [`TEXT_CAP`] bytes.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_str(&read_text(path)?)
        .map_err(|e| Error::Input(format!("{}: invalid JSON: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn pipes_devices_and_folders_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let link = dir.path().join("zero-link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for p in [
            fifo.as_path(),
            Path::new("/dev/zero"),
            link.as_path(),
            dir.path(),
        ] {
            let e = read_json(p).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains("expected a file"), "{e}");
        }
    }

    #[test]
    fn files_over_the_cap_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        std::fs::write(&p, vec![b' '; 2000]).unwrap();
        let e = read_capped(&p, 1000).unwrap_err();
        assert!(e.to_string().contains("2000 bytes"), "{e}");
        assert_eq!(read_capped(&p, 2000).unwrap().len(), 2000);
    }
}
