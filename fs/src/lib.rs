//! Filesystems of the kernel: a read-only reader of gfs2's on-disk format, the page cache,
//! and gfs2's glocks with the read path that takes them only on a cache miss.
//!
//! A `no_std` library (it needs `alloc`), built and tested on the host and used unchanged by
//! the kernel. It reads through the [`BlockDevice`](drivers::block::BlockDevice) trait of
//! the drivers crate, which the kernel's virtio-blk driver and initrd RAM disk implement, and
//! which [`RamDisk`](drivers::block::RamDisk) implements over an image held in memory.
//!
//! ```no_run
//! # fn demo(image: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use drivers::block::RamDisk;
//! use embedded_io::Read;
//! use fs::gfs2::Filesystem;
//!
//! let filesystem = Filesystem::open(RamDisk::new(image, 512)?)?;
//! for entry in filesystem.read_dir(filesystem.root())? {
//!     println!("{}", String::from_utf8_lossy(&entry.name));
//! }
//! let mut file = filesystem.open_file("/dir/a.txt")?;
//! let mut text = [0; 64];
//! let read = file.read(&mut text)?;
//! # Ok(())
//! # }
//! ```

#![no_std]

extern crate alloc;

#[cfg(test)]
extern crate std;

pub mod gfs2;
pub mod pagecache;

mod sync;
