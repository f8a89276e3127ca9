//! Reading file data, and open files that implement `embedded_io::Read + Seek`.
//!
//! A stuffed file is copied out of its dinode block. An unstuffed one is read extent by
//! extent through its metadata tree: whole blocks go straight from the device into the
//! caller's buffer, holes are filled with zeros, and only a partial block passes through a
//! bounce buffer. Journaled-data (jdata) regular files read the same way: on disk their data
//! blocks are raw, exactly as for other files.

use alloc::vec;
use alloc::vec::Vec;

use drivers::block::BlockDevice;
use embedded_io::SeekFrom;

use super::metapath::Extent;
use super::{Error, FileType, Filesystem, Inode, Result};

impl<D: BlockDevice> Filesystem<D> {
    /// Reads bytes of `inode` from byte `offset` into `buf`; returns how many, 0 at or past
    /// the end of the file.
    pub fn read_at(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, D::Error> {
        if inode.is_dir() {
            return Err(Error::IsADirectory);
        }
        let size = inode.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = (size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..len];

        if inode.is_stuffed() {
            // `offset < size`, and the size fits the stuffed area: checked at read_inode.
            buf.copy_from_slice(&inode.stuffed_data()[offset as usize..][..len]);
            return Ok(len);
        }

        let bsize = u64::from(self.geometry.bsize);
        let mut bounce: Option<Vec<u8>> = None;
        let mut done = 0;
        while done < len {
            let position = offset + done as u64;
            let lblock = position >> self.geometry.bsize_shift;
            let within = (position % bsize) as usize;
            let left = len - done;
            let blocks_wanted = (within + left).div_ceil(bsize as usize) as u64;

            done += match self.map_extent(inode, lblock, blocks_wanted)? {
                Extent::Hole { len: blocks } => {
                    let bytes = (blocks * bsize - within as u64).min(left as u64) as usize;
                    buf[done..done + bytes].fill(0);
                    bytes
                }
                Extent::Mapped { start, len: blocks } if within == 0 && left as u64 >= bsize => {
                    let bytes = (blocks.min(left as u64 / bsize) * bsize) as usize;
                    self.read_blocks(start, &mut buf[done..done + bytes])?;
                    bytes
                }
                Extent::Mapped { start, .. } => {
                    let block = bounce.get_or_insert_with(|| vec![0; bsize as usize]);
                    self.read_blocks(start, block)?;
                    let bytes = (bsize as usize - within).min(left);
                    buf[done..done + bytes].copy_from_slice(&block[within..within + bytes]);
                    bytes
                }
            };
        }
        Ok(len)
    }

    /// Opens the regular file at `path` (following symlinks) for reading.
    pub fn open_file(&self, path: impl AsRef<[u8]>) -> Result<File<'_, D>, D::Error> {
        let inode = self.lookup(path)?;
        self.open_inode(inode)
    }

    /// Opens a regular file for reading, after checking its whole metadata tree
    /// ([`Filesystem::verify_tree`]).
    pub fn open_inode(&self, inode: Inode) -> Result<File<'_, D>, D::Error> {
        match inode.file_type() {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::IsADirectory),
            _ => return Err(Error::NotARegularFile),
        }

        self.verify_tree(&inode)?;
        Ok(File {
            filesystem: self,
            inode,
            position: 0,
        })
    }
}

/// A regular file open for reading, with a position.
pub struct File<'a, D: BlockDevice> {
    filesystem: &'a Filesystem<D>,
    inode: Inode,
    position: u64,
}

impl<D: BlockDevice> File<'_, D> {
    /// The file's inode.
    pub fn inode(&self) -> &Inode {
        &self.inode
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.inode.size()
    }

    /// The position of the next read.
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl<D: BlockDevice> core::fmt::Debug for File<'_, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("File")
            .field("inode", &self.inode.addr())
            .field("size", &self.inode.size())
            .field("position", &self.position)
            .finish()
    }
}

impl<D: BlockDevice> embedded_io::ErrorType for File<'_, D> {
    type Error = Error<D::Error>;
}

impl<D: BlockDevice> embedded_io::Read for File<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, D::Error> {
        let read = self.filesystem.read_at(&self.inode, self.position, buf)?;
        self.position += read as u64;
        Ok(read)
    }
}

impl<D: BlockDevice> embedded_io::Seek for File<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> Result<u64, D::Error> {
        let position = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.inode.size().checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = position.ok_or(Error::InvalidSeek)?;
        Ok(self.position)
    }
}
