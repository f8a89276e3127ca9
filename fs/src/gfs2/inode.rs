//! Dinodes: reading and checking them, and what `stat` shows of them.
//!
//! A dinode fills one block: a 232-byte header with every attribute of the file, then either
//! the file's data ("stuffed", height 0) or the top level of its metadata tree. An [`Inode`]
//! keeps the whole block, so a stuffed file, a symlink target, a linear directory or a stuffed
//! hash table is read without touching the device again.
//!
//! [`Filesystem::read_inode`] checks everything later reads rely on: the header, the
//! address, the file type, the height and depth limits, and that the size fits what the
//! stuffed area (or a directory's hash-table tree) can hold. A regular file's size may exceed
//! what its tree reaches: Linux does not grow the tree when a truncate extends a file, and
//! the blocks past the reach read as holes (`/sparse-tail` of the fixtures is such a file).

use alloc::string::String;
use alloc::vec::Vec;

use drivers::block::BlockDevice;

use super::ondisk::{DIF_EXHASH, DINODE_SIZE, Dinode, Inum, MAX_DIR_DEPTH, MetaType, Timestamp};
use super::{Corruption, Filesystem, Result};

/// The type of a file, from the `S_IFMT` bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FileType {
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A directory.
    Directory,
    /// A block device.
    BlockDevice,
    /// A regular file.
    Regular,
    /// A symbolic link.
    Symlink,
    /// A Unix-domain socket.
    Socket,
}

/// The `S_IFMT` mask of a mode.
pub const S_IFMT: u32 = 0o170000;

impl FileType {
    /// The type in the `S_IFMT` bits of `mode`, if they name one.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Self::from_dirent_type(((mode & S_IFMT) >> 12) as u16)
    }

    /// The type a directory entry records (`DT_*`, which is `S_IFMT >> 12`); `None` for
    /// `DT_UNKNOWN` and other values.
    pub fn from_dirent_type(dirent_type: u16) -> Option<Self> {
        match dirent_type {
            1 => Some(Self::Fifo),
            2 => Some(Self::CharDevice),
            4 => Some(Self::Directory),
            6 => Some(Self::BlockDevice),
            8 => Some(Self::Regular),
            10 => Some(Self::Symlink),
            12 => Some(Self::Socket),
            _ => None,
        }
    }

    /// The `DT_*` value of the type.
    pub fn dirent_type(self) -> u16 {
        match self {
            Self::Fifo => 1,
            Self::CharDevice => 2,
            Self::Directory => 4,
            Self::BlockDevice => 6,
            Self::Regular => 8,
            Self::Symlink => 10,
            Self::Socket => 12,
        }
    }

    /// The character `ls -l` shows for the type: `-`, `d`, `l`, `p`, `c`, `b` or `s`.
    pub fn ls_char(self) -> char {
        match self {
            Self::Fifo => 'p',
            Self::CharDevice => 'c',
            Self::Directory => 'd',
            Self::BlockDevice => 'b',
            Self::Regular => '-',
            Self::Symlink => 'l',
            Self::Socket => 's',
        }
    }
}

/// A dinode read from disk and checked, with its whole block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    dinode: Dinode,
    file_type: FileType,
    block: Vec<u8>,
}

impl Inode {
    /// An empty directory that stands in for the root and master while a filesystem opens.
    pub(crate) fn placeholder() -> Self {
        let dinode = Dinode::decode(&[0; DINODE_SIZE]);
        Self {
            dinode,
            file_type: FileType::Directory,
            block: Vec::new(),
        }
    }

    /// The inode number: the dinode's block address (`no_addr`).
    pub fn addr(&self) -> u64 {
        self.dinode.num.addr
    }

    /// The formal inode number and the address.
    pub fn inum(&self) -> Inum {
        self.dinode.num
    }

    /// Every field of the dinode.
    pub fn dinode(&self) -> &Dinode {
        &self.dinode
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        self.file_type
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// Whether this is a directory with a hash table (exhash) rather than a linear one.
    pub fn is_exhash(&self) -> bool {
        self.is_dir() && self.dinode.flags & DIF_EXHASH != 0
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.dinode.size
    }

    /// Whether the data is stuffed in the dinode block (height 0).
    pub fn is_stuffed(&self) -> bool {
        self.dinode.height == 0
    }

    /// The metadata tree height.
    pub fn height(&self) -> u16 {
        self.dinode.height
    }

    /// What `stat` shows.
    pub fn stat(&self) -> Stat {
        let dinode = &self.dinode;
        Stat {
            ino: dinode.num.addr,
            formal_ino: dinode.num.formal_ino,
            file_type: self.file_type,
            mode: dinode.mode,
            nlink: dinode.nlink,
            uid: dinode.uid,
            gid: dinode.gid,
            size: dinode.size,
            blocks: dinode.blocks,
            block_size: self.block.len() as u32,
            atime: dinode.atime,
            mtime: dinode.mtime,
            ctime: dinode.ctime,
            major: dinode.major,
            minor: dinode.minor,
            flags: dinode.flags,
        }
    }

    /// The dinode block.
    pub(crate) fn block(&self) -> &[u8] {
        &self.block
    }

    /// The stuffed area: what follows the dinode header up to the end of the block.
    pub(crate) fn stuffed_area(&self) -> &[u8] {
        &self.block[DINODE_SIZE..]
    }

    /// The stuffed data of a height-0 inode: `size` bytes, which [`Filesystem::read_inode`]
    /// checked fit the stuffed area.
    pub(crate) fn stuffed_data(&self) -> &[u8] {
        &self.stuffed_area()[..self.dinode.size as usize]
    }
}

/// The attributes of a file, as `stat(2)` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stat {
    /// Inode number: the dinode's block address.
    pub ino: u64,
    /// The formal inode number (NFS file handles use it).
    pub formal_ino: u64,
    /// File type.
    pub file_type: FileType,
    /// The whole mode: type bits and permissions.
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Filesystem blocks the file owns, its dinode and metadata included.
    pub blocks: u64,
    /// Filesystem block size in bytes.
    pub block_size: u32,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification of the data.
    pub mtime: Timestamp,
    /// Last change of the dinode.
    pub ctime: Timestamp,
    /// Device major number (device files).
    pub major: u32,
    /// Device minor number (device files).
    pub minor: u32,
    /// `di_flags`.
    pub flags: u32,
}

impl Stat {
    /// The permission bits, set-id and sticky bits included.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// The mode as `ls -l` shows it, such as `drwxr-xr-x` or `-rwsr-xr-x`.
    pub fn mode_string(&self) -> String {
        let mode = self.mode;
        let bit = |mask: u32, set: char| if mode & mask != 0 { set } else { '-' };
        // An execute bit shared with a set-id or sticky bit: lowercase when both are set.
        let special = |execute: u32, special: u32, letter: char| match (
            mode & execute != 0,
            mode & special != 0,
        ) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        };

        [
            self.file_type.ls_char(),
            bit(0o400, 'r'),
            bit(0o200, 'w'),
            special(0o100, 0o4000, 's'),
            bit(0o040, 'r'),
            bit(0o020, 'w'),
            special(0o010, 0o2000, 's'),
            bit(0o004, 'r'),
            bit(0o002, 'w'),
            special(0o001, 0o1000, 't'),
        ]
        .into_iter()
        .collect()
    }

    /// Blocks in 512-byte units, as `st_blocks` counts them.
    pub fn sectors(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size / 512))
    }
}

impl<D: BlockDevice> Filesystem<D> {
    /// Reads and checks the dinode at block `addr` (the inode number), after checking that
    /// the block lies in a resource group.
    ///
    /// [`Filesystem::open_entry`] also checks the dinode against the directory entry.
    pub fn read_inode(&self, addr: u64) -> Result<Inode, D::Error> {
        self.check_pointer(addr, addr)?;
        let block = self.read_meta(addr, MetaType::Dinode)?;
        let dinode = Dinode::decode(&block);

        if dinode.num.addr != addr {
            return Err(Corruption::DinodeAddressMismatch {
                block: addr,
                recorded: dinode.num.addr,
            }
            .into());
        }
        let file_type = FileType::from_mode(dinode.mode).ok_or(Corruption::BadMode {
            inode: addr,
            mode: dinode.mode,
        })?;
        let inode = Inode {
            dinode,
            file_type,
            block,
        };
        self.check_shape(&inode)?;
        Ok(inode)
    }

    /// Checks the height, depth and size of a dinode against each other and the block size.
    fn check_shape(&self, inode: &Inode) -> core::result::Result<(), Corruption> {
        let geometry = &self.geometry;
        let dinode = &inode.dinode;
        let (addr, height, size) = (inode.addr(), dinode.height, dinode.size);

        if height > geometry.max_height {
            return Err(Corruption::HeightTooLarge {
                inode: addr,
                height,
                max: geometry.max_height,
            });
        }
        if dinode.depth > MAX_DIR_DEPTH {
            return Err(Corruption::DepthTooLarge {
                inode: addr,
                depth: dinode.depth,
            });
        }

        let beyond_tree = Corruption::SizeBeyondTree {
            inode: addr,
            size,
            height,
        };
        match inode.file_type {
            FileType::Directory if inode.is_exhash() => {
                if size != 8u64 << dinode.depth {
                    return Err(Corruption::HashTableSize {
                        inode: addr,
                        size,
                        depth: dinode.depth,
                    });
                }
                if size > geometry.reach(height, geometry.jbsize) {
                    return Err(beyond_tree);
                }
            }
            FileType::Directory => {
                if height != 0 {
                    return Err(Corruption::UnstuffedLinearDir {
                        inode: addr,
                        height,
                    });
                }
            }
            FileType::Symlink => {
                if height != 0 || size == 0 || size >= geometry.stuffed_capacity() {
                    return Err(Corruption::BadSymlink {
                        inode: addr,
                        size,
                        height,
                    });
                }
            }
            // Linux keeps the height when a truncate extends a file, so an unstuffed file
            // may be larger than its tree reaches: the blocks past the reach are holes. A
            // stuffed file always fits its dinode (Linux unstuffs it before it grows).
            _ => {
                if height == 0 && size > geometry.stuffed_capacity() {
                    return Err(beyond_tree);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types_round_trip_through_modes_and_dirent_types() {
        let modes = [
            (0o010644, FileType::Fifo, 'p'),
            (0o020644, FileType::CharDevice, 'c'),
            (0o040755, FileType::Directory, 'd'),
            (0o060644, FileType::BlockDevice, 'b'),
            (0o100644, FileType::Regular, '-'),
            (0o120777, FileType::Symlink, 'l'),
            (0o140755, FileType::Socket, 's'),
        ];

        for (mode, file_type, ls_char) in modes {
            assert_eq!(FileType::from_mode(mode), Some(file_type));
            assert_eq!(
                FileType::from_dirent_type(file_type.dirent_type()),
                Some(file_type)
            );
            assert_eq!(file_type.ls_char(), ls_char);
        }
        for bad in [0, 0o030000, 0o170000] {
            assert_eq!(FileType::from_mode(bad), None);
        }
    }

    fn stat_with_mode(mode: u32) -> Stat {
        let mut block = [0u8; DINODE_SIZE];
        block[40..44].copy_from_slice(&mode.to_be_bytes());
        let dinode = Dinode::decode(&block);
        let file_type = FileType::from_mode(mode).unwrap();
        Inode {
            dinode,
            file_type,
            block: block.to_vec(),
        }
        .stat()
    }

    #[test]
    fn mode_strings_look_like_ls() {
        let cases = [
            (0o040755, "drwxr-xr-x"),
            (0o100644, "-rw-r--r--"),
            (0o104755, "-rwsr-xr-x"),
            (0o102644, "-rw-r-Sr--"),
            (0o041777, "drwxrwxrwt"),
            (0o041776, "drwxrwxrwT"),
            (0o120777, "lrwxrwxrwx"),
            (0o020644, "crw-r--r--"),
        ];

        for (mode, expected) in cases {
            assert_eq!(stat_with_mode(mode).mode_string(), expected, "{mode:o}");
        }
    }
}
