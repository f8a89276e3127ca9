//! The demo image `cargo run` boots with: `demo/` built into `target/runner/demo.img`; and the
//! image `runner bench` reads, one 64 MiB file built into `target/runner/bench.img`.
//!
//! The image is rebuilt only when its sources change. A stamp file next to it records what
//! it was built from: a line per source file (path, type, size, mode, owner and modification
//! time) and the writer's format version. A build whose stamp matches is skipped.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::{MkfsError, Options, make_image};
use crate::kernel_build::{runner_output_dir, workspace_root};

/// The directory the demo image is built from, relative to the workspace root.
pub const DEMO_SOURCE: &str = "demo";

/// Bumped whenever the writer changes what it writes, so old demo images are rebuilt.
const WRITER_VERSION: u32 = 1;

/// Builds `target/runner/demo.img` from `demo/` unless it is up to date, and returns its path.
pub fn demo_image() -> Result<PathBuf, MkfsError> {
    let source = workspace_root().join(DEMO_SOURCE);
    let output_dir = runner_output_dir();
    fs::create_dir_all(&output_dir).map_err(|error| MkfsError::WriteImage {
        path: output_dir.clone(),
        source: error,
    })?;
    let image = output_dir.join("demo.img");
    build_if_stale(&source, &image, &Options::default())?;
    Ok(image)
}

/// The file `runner bench` reads, inside the bench image.
pub const BENCH_FILE: &str = "bench-64m";

/// Its size: 64 MiB.
pub const BENCH_FILE_BYTES: u64 = 64 << 20;

/// Builds `target/runner/bench.img`, which holds [`BENCH_FILE`] (64 MiB of pseudo-random
/// bytes, the same on every machine), unless it is up to date, and returns its path.
pub fn bench_image() -> Result<PathBuf, MkfsError> {
    let output_dir = runner_output_dir();
    let source = output_dir.join("bench-src");
    fs::create_dir_all(&source).map_err(|error| MkfsError::WriteImage {
        path: source.clone(),
        source: error,
    })?;
    let file = source.join(BENCH_FILE);
    // Written only when missing or of another size, so the stamp of the image stays valid.
    if fs::metadata(&file).map(|metadata| metadata.len()).ok() != Some(BENCH_FILE_BYTES) {
        fs::write(&file, bench_content()).map_err(|error| MkfsError::WriteImage {
            path: file.clone(),
            source: error,
        })?;
    }
    let image = output_dir.join("bench.img");
    build_if_stale(&source, &image, &Options::default())?;
    Ok(image)
}

/// [`BENCH_FILE_BYTES`] bytes of xorshift64 output: no block is all zeros, so none becomes a
/// hole.
fn bench_content() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(BENCH_FILE_BYTES as usize);
    while (bytes.len() as u64) < BENCH_FILE_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes
}

/// Builds `image` from `source` unless its stamp says it was built from the same files with
/// the same options. Returns whether it built.
pub fn build_if_stale(source: &Path, image: &Path, options: &Options) -> Result<bool, MkfsError> {
    let stamp_path = image.with_extension("img.stamp");
    let stamp = fingerprint(source, options)?;
    let current = fs::read_to_string(&stamp_path).ok();
    if image.is_file() && current.as_deref() == Some(stamp.as_str()) {
        return Ok(false);
    }

    make_image(source, image, options)?;
    fs::write(&stamp_path, stamp).map_err(|error| MkfsError::WriteImage {
        path: stamp_path,
        source: error,
    })?;
    Ok(true)
}

/// What the image depends on, one line per file of `source` in path order.
fn fingerprint(source: &Path, options: &Options) -> Result<String, MkfsError> {
    let mut stamp = format!("writer {WRITER_VERSION} {options:?}\n");
    let mut pending = vec![source.to_owned()];
    while let Some(path) = pending.pop() {
        let read_error = |error| MkfsError::ReadSource {
            path: path.clone(),
            source: error,
        };
        let metadata = fs::symlink_metadata(&path).map_err(read_error)?;
        let _ = writeln!(
            stamp,
            "{} {:o} {} {}:{} {}.{:09}",
            path.strip_prefix(source).unwrap_or(&path).display(),
            metadata.mode(),
            metadata.len(),
            metadata.uid(),
            metadata.gid(),
            metadata.mtime(),
            metadata.mtime_nsec()
        );
        if metadata.is_dir() {
            let mut children = Vec::new();
            for entry in fs::read_dir(&path).map_err(read_error)? {
                children.push(entry.map_err(read_error)?.path());
            }
            children.sort();
            // Popped from the end: push in reverse to visit in order.
            pending.extend(children.into_iter().rev());
        }
    }
    Ok(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_rebuilt_only_when_its_source_changed() {
        let dir = runner_output_dir().join("demo-stale-test");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/file"), b"one").unwrap();
        let image = dir.join("out.img");
        let options = Options::default();

        assert!(build_if_stale(&dir.join("src"), &image, &options).unwrap());
        assert!(!build_if_stale(&dir.join("src"), &image, &options).unwrap());
        fs::write(dir.join("src/other"), b"two").unwrap();
        assert!(build_if_stale(&dir.join("src"), &image, &options).unwrap());
        fs::remove_file(&image).unwrap();
        assert!(build_if_stale(&dir.join("src"), &image, &options).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_source_changes_the_fingerprint() {
        let dir = runner_output_dir().join("demo-fingerprint-test");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/file"), b"one").unwrap();
        let options = Options::default();
        let before = fingerprint(&dir, &options).unwrap();

        assert_eq!(fingerprint(&dir, &options).unwrap(), before);
        fs::write(dir.join("sub/file"), b"three").unwrap();
        let after = fingerprint(&dir, &options).unwrap();
        let other_options = Options {
            block_size: 1024,
            ..Options::default()
        };

        assert_ne!(after, before);
        assert_ne!(fingerprint(&dir, &other_options).unwrap(), after);
        fs::remove_dir_all(&dir).unwrap();
    }
}
