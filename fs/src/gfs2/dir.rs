//! Directories: linear and exhash, lookup by hash, readdir and path resolution.
//!
//! A directory entry (dirent) is a 40-byte header and a name; entries chain by their record
//! length and fill their block to the end. A small directory is *linear*: its entries sit in
//! the dinode block after the header. A larger one is *exhash*: its content is a hash table
//! of `2^depth` leaf block numbers, stuffed in the dinode or spread over journaled-data
//! blocks, and each leaf holds entries (with overflow leaves chained by `lf_next`). A name's
//! slot is the top `depth` bits of its hash, the standard CRC-32 of the name, so a lookup
//! reads one slot and the leaf chain it names; it never scans the directory.
//!
//! Every block of entries is checked as Linux does before it is used: record lengths are
//! nonzero, 8-aligned and stay in the block, names fit their records, the stored hash is the
//! name's, and the live entries match the leaf's and the dinode's counts. Readdir also
//! checks the shape of the hash table: each leaf's slots form one aligned run and each entry
//! lies in the run its hash selects; leaf chains that loop are caught.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use drivers::block::BlockDevice;

use super::ondisk::{
    DINODE_SIZE, DIRENT_HEADER_SIZE, Inum, LEAF_HEADER_SIZE, MAX_NAME_LEN, META_HEADER_SIZE,
    MetaType, RawDirent, RawLeaf, be64, name_hash,
};
use super::{Corruption, DirentProblem, Error, FileType, Filesystem, Inode, MAX_SYMLINKS, Result};

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name: bytes, usually UTF-8.
    pub name: Vec<u8>,
    /// The dinode the entry names.
    pub inum: Inum,
    /// The stored hash of the name.
    pub hash: u32,
    /// The `DT_*` type the entry records.
    pub dirent_type: u16,
}

impl DirEntry {
    /// The recorded file type; `None` for `DT_UNKNOWN` or a value that names no type.
    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_dirent_type(self.dirent_type)
    }

    /// The name, if it is UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        core::str::from_utf8(&self.name).ok()
    }

    fn new(raw: &RawDirent, name: &[u8]) -> Self {
        Self {
            name: name.to_vec(),
            inum: raw.inum,
            hash: raw.hash,
            dirent_type: raw.file_type,
        }
    }
}

/// The hash-table slot of `hash` in a table of `2^depth` slots: the top `depth` bits of the
/// hash (all of them for a depth above 32).
pub fn hash_slot(hash: u32, depth: u16) -> u64 {
    u64::from(hash) >> 32u32.saturating_sub(depth.into())
}

/// Walks the entries of a block from `start` to its end, checking each, and passes every
/// live entry (not a sentinel) to `visit`. Returns the number of live entries.
///
/// `block` is the address of the block, for error reports.
pub fn scan_dirents(
    bytes: &[u8],
    start: usize,
    block: u64,
    mut visit: impl FnMut(&RawDirent, &[u8]) -> core::result::Result<(), Corruption>,
) -> core::result::Result<u32, Corruption> {
    let end = bytes.len();
    let mut offset = start;
    let mut live = 0;

    while offset < end {
        let bad = |problem| Corruption::BadDirent {
            block,
            offset: offset as u32,
            problem,
        };
        if end - offset < DIRENT_HEADER_SIZE {
            return Err(bad(DirentProblem::HeaderPastEnd));
        }
        let raw = RawDirent::decode(bytes, offset);
        let rec_len = raw.rec_len;
        if rec_len == 0 {
            return Err(bad(DirentProblem::RecLenZero));
        }
        if usize::from(rec_len) < DIRENT_HEADER_SIZE {
            return Err(bad(DirentProblem::RecLenTooShort(rec_len)));
        }
        if !rec_len.is_multiple_of(8) {
            return Err(bad(DirentProblem::RecLenUnaligned(rec_len)));
        }
        if usize::from(rec_len) > end - offset {
            return Err(bad(DirentProblem::RecLenPastEnd(rec_len)));
        }

        if !raw.is_sentinel() {
            let name_len = raw.name_len;
            if name_len == 0 || usize::from(name_len) > MAX_NAME_LEN {
                return Err(bad(DirentProblem::BadNameLen(name_len)));
            }
            if DIRENT_HEADER_SIZE + usize::from(name_len) > usize::from(rec_len) {
                return Err(bad(DirentProblem::NameLenPastRecLen { name_len, rec_len }));
            }
            let name_start = offset + DIRENT_HEADER_SIZE;
            let name = &bytes[name_start..name_start + usize::from(name_len)];
            if name_hash(name) != raw.hash {
                return Err(bad(DirentProblem::HashMismatch(raw.hash)));
            }
            visit(&raw, name)?;
            live += 1;
        }
        offset += usize::from(rec_len);
    }
    Ok(live)
}

/// Reads the slots of an exhash directory's hash table, keeping the last table block.
struct HashTable<'a, D: BlockDevice> {
    filesystem: &'a Filesystem<D>,
    dir: &'a Inode,
    /// The logical block of the table last read, and its bytes.
    cached: Option<(u64, Vec<u8>)>,
}

impl<'a, D: BlockDevice> HashTable<'a, D> {
    fn new(filesystem: &'a Filesystem<D>, dir: &'a Inode) -> Self {
        Self {
            filesystem,
            dir,
            cached: None,
        }
    }

    /// Number of slots: `2^depth` (at most 2^17, checked when the dinode was read).
    fn slots(&self) -> u64 {
        1 << self.dir.dinode().depth
    }

    /// The leaf block of `slot` (below [`Self::slots`]), checked as a pointer.
    fn slot(&mut self, slot: u64) -> Result<u64, D::Error> {
        let dir = self.dir;
        let offset = slot * 8;
        let leaf = if dir.is_stuffed() {
            // `8 << depth` fits the stuffed area: checked when the dinode was read.
            be64(dir.stuffed_area(), offset as usize)
        } else {
            let jbsize = self.filesystem.geometry.jbsize;
            let lblock = offset / jbsize;
            let within = (offset % jbsize) as usize;
            let block = match self.cached.take() {
                Some((cached, block)) if cached == lblock => block,
                _ => {
                    let hole = Corruption::HashTableHole {
                        inode: dir.addr(),
                        slot: slot as u32,
                    };
                    let physical = self.filesystem.map_block(dir, lblock)?.ok_or(hole)?;
                    self.filesystem
                        .read_meta(physical, MetaType::JournaledData)?
                }
            };
            let leaf = be64(&block, META_HEADER_SIZE + within);
            self.cached = Some((lblock, block));
            leaf
        };

        if leaf == 0 {
            return Err(Corruption::HashTableHole {
                inode: dir.addr(),
                slot: slot as u32,
            }
            .into());
        }
        self.filesystem.check_pointer(dir.addr(), leaf)?;
        Ok(leaf)
    }
}

impl<D: BlockDevice> Filesystem<D> {
    /// Reads leaf block `leaf` of directory `dir` and checks its header.
    fn read_leaf(&self, dir: &Inode, from: u64, leaf: u64) -> Result<(Vec<u8>, RawLeaf), D::Error> {
        self.check_pointer(from, leaf)?;
        let block = self.read_meta(leaf, MetaType::Leaf)?;
        let header = RawLeaf::decode(&block);
        let dir_depth = dir.dinode().depth;
        if header.depth > dir_depth {
            return Err(Corruption::LeafDepth {
                leaf,
                leaf_depth: header.depth,
                dir_depth,
            }
            .into());
        }
        Ok((block, header))
    }

    /// Finds the entry called `name` in directory `dir`.
    ///
    /// An exhash directory is searched by hash: one hash-table slot (one table block at
    /// most), then the leaf chain it names.
    pub fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<DirEntry>, D::Error> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong);
        }

        let hash = name_hash(name);
        if !dir.is_exhash() {
            let (live, found) = find_in_block(dir.block(), DINODE_SIZE, dir.addr(), name, hash)?;
            check_count(dir.addr(), dir.dinode().entries, live)?;
            return Ok(found);
        }

        let slot = hash_slot(hash, dir.dinode().depth);
        let mut leaf = HashTable::new(self, dir).slot(slot)?;
        let mut from = dir.addr();
        let mut chain = BTreeSet::new();
        loop {
            if !chain.insert(leaf) {
                return Err(Corruption::LeafChainLoop {
                    inode: dir.addr(),
                    leaf,
                }
                .into());
            }
            let (block, header) = self.read_leaf(dir, from, leaf)?;
            let (live, found) = find_in_block(&block, LEAF_HEADER_SIZE, leaf, name, hash)?;
            check_count(leaf, header.entries.into(), live)?;

            if found.is_some() || header.next == 0 {
                return Ok(found);
            }
            (from, leaf) = (leaf, header.next);
        }
    }

    /// Lists directory `dir`: every live entry, `.` and `..` included, in on-disk order.
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry>, D::Error> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory);
        }

        let mut entries = Vec::new();
        if !dir.is_exhash() {
            let live = scan_dirents(dir.block(), DINODE_SIZE, dir.addr(), |raw, name| {
                entries.push(DirEntry::new(raw, name));
                Ok(())
            })?;
            check_count(dir.addr(), dir.dinode().entries, live)?;
            return Ok(entries);
        }

        let depth = dir.dinode().depth;
        let mut table = HashTable::new(self, dir);
        let mut leaves = BTreeSet::new();
        let mut live_total: u64 = 0;
        let mut slot = 0;
        while slot < table.slots() {
            // The slots of a leaf form one run, aligned to its length.
            let head = table.slot(slot)?;
            let (mut block, mut header) = self.read_leaf(dir, dir.addr(), head)?;
            let run = 1u64 << (depth - header.depth);
            let bad_run = |slot: u64| Corruption::BadLeafRun {
                inode: dir.addr(),
                slot: slot as u32,
                leaf: head,
            };
            if slot % run != 0 {
                return Err(bad_run(slot).into());
            }
            for other in slot + 1..slot + run {
                if table.slot(other)? != head {
                    return Err(bad_run(other).into());
                }
            }

            // The chain of leaves of the run; each entry's hash selects a slot in the run.
            let mut leaf = head;
            loop {
                if !leaves.insert(leaf) {
                    return Err(Corruption::LeafChainLoop {
                        inode: dir.addr(),
                        leaf,
                    }
                    .into());
                }
                let live = scan_dirents(&block, LEAF_HEADER_SIZE, leaf, |raw, name| {
                    let hash_slot = hash_slot(raw.hash, depth);
                    if !(slot..slot + run).contains(&hash_slot) {
                        return Err(Corruption::DirentOutsideLeaf {
                            leaf,
                            hash: raw.hash,
                        });
                    }
                    entries.push(DirEntry::new(raw, name));
                    Ok(())
                })?;
                check_count(leaf, header.entries.into(), live)?;
                live_total += u64::from(live);

                if header.next == 0 {
                    break;
                }
                let next = header.next;
                (block, header) = self.read_leaf(dir, leaf, next)?;
                leaf = next;
            }
            slot += run;
        }

        let live_total = u32::try_from(live_total).unwrap_or(u32::MAX);
        check_count(dir.addr(), dir.dinode().entries, live_total)?;
        Ok(entries)
    }

    /// Reads the dinode an entry names, and checks that it is the one the entry meant: the
    /// same formal inode number and file type.
    pub fn open_entry(&self, entry: &DirEntry) -> Result<Inode, D::Error> {
        let inode = self.read_inode(entry.inum.addr)?;
        let found = inode.inum().formal_ino;
        if found != entry.inum.formal_ino {
            let (addr, expected) = (entry.inum.addr, entry.inum.formal_ino);
            return Err(Corruption::FormalInoMismatch {
                inode: addr,
                expected,
                found,
            }
            .into());
        }
        if entry.dirent_type != 0 && entry.file_type() != Some(inode.file_type()) {
            let (addr, mode) = (inode.addr(), inode.dinode().mode);
            let dirent_type = entry.dirent_type;
            return Err(Corruption::DirentTypeMismatch {
                inode: addr,
                dirent_type,
                mode,
            }
            .into());
        }
        Ok(inode)
    }

    /// The inode called `name` in directory `dir` (not following a symlink).
    pub fn lookup_in(&self, dir: &Inode, name: &[u8]) -> Result<Inode, D::Error> {
        let entry = self.find_entry(dir, name)?.ok_or(Error::NotFound)?;
        self.open_entry(&entry)
    }

    /// The target of a symlink.
    pub fn read_link(&self, inode: &Inode) -> Result<Vec<u8>, D::Error> {
        if inode.file_type() != FileType::Symlink {
            return Err(Error::NotASymlink);
        }
        // Stuffed, nonempty and shorter than the stuffed area: checked when it was read.
        Ok(inode.stuffed_data().to_vec())
    }

    /// Resolves `path` from the root, following every symlink, as `stat(2)` does.
    ///
    /// Components are separated by `/`; a leading `/` is optional. `.` and `..` are the
    /// directory entries gfs2 stores. A path that ends in `/` must name a directory.
    pub fn lookup(&self, path: impl AsRef<[u8]>) -> Result<Inode, D::Error> {
        self.resolve(path.as_ref(), true)
    }

    /// Resolves `path` from the root without following a symlink in its last component, as
    /// `lstat(2)` does.
    pub fn lookup_nofollow(&self, path: impl AsRef<[u8]>) -> Result<Inode, D::Error> {
        self.resolve(path.as_ref(), false)
    }

    fn resolve(&self, path: &[u8], follow_last: bool) -> Result<Inode, D::Error> {
        let must_be_dir = path.ends_with(b"/");
        let follow_last = follow_last || must_be_dir;
        // Components still to resolve, the next one last.
        let mut pending: Vec<Vec<u8>> = Vec::new();
        push_components(&mut pending, path);
        let mut current = self.root.clone();
        let mut symlinks_followed = 0;

        while let Some(name) = pending.pop() {
            let child = self.lookup_in(&current, &name)?;
            let is_last = pending.is_empty();
            if child.file_type() == FileType::Symlink && (follow_last || !is_last) {
                symlinks_followed += 1;
                if symlinks_followed > MAX_SYMLINKS {
                    return Err(Error::TooManySymlinks);
                }
                let target = self.read_link(&child)?;
                if target.starts_with(b"/") {
                    current = self.root.clone();
                }
                push_components(&mut pending, &target);
                continue;
            }
            current = child;
        }

        if must_be_dir && !current.is_dir() {
            return Err(Error::NotADirectory);
        }
        Ok(current)
    }
}

/// Pushes the components of `path` onto `pending` so that the first is popped first.
fn push_components(pending: &mut Vec<Vec<u8>>, path: &[u8]) {
    let components = path.split(|&b| b == b'/').filter(|c| !c.is_empty());
    let start = pending.len();
    pending.extend(components.map(<[u8]>::to_vec));
    pending[start..].reverse();
}

/// Scans one block of entries for `name`, whose hash is `hash`; returns the live entries of
/// the block and the entry found.
fn find_in_block(
    bytes: &[u8],
    start: usize,
    block: u64,
    name: &[u8],
    hash: u32,
) -> core::result::Result<(u32, Option<DirEntry>), Corruption> {
    let mut found = None;
    let live = scan_dirents(bytes, start, block, |raw, entry_name| {
        if found.is_none() && raw.hash == hash && entry_name == name {
            found = Some(DirEntry::new(raw, entry_name));
        }
        Ok(())
    })?;
    Ok((live, found))
}

fn check_count(block: u64, recorded: u32, counted: u32) -> core::result::Result<(), Corruption> {
    if recorded != counted {
        return Err(Corruption::EntryCount {
            block,
            recorded,
            counted,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a dirent to `block` at `offset`; returns the offset after it.
    fn put_dirent(block: &mut [u8], offset: usize, addr: u64, name: &[u8], rec_len: u16) -> usize {
        block[offset..offset + 8].copy_from_slice(&addr.to_be_bytes());
        block[offset + 8..offset + 16].copy_from_slice(&addr.to_be_bytes());
        block[offset + 16..offset + 20].copy_from_slice(&name_hash(name).to_be_bytes());
        block[offset + 20..offset + 22].copy_from_slice(&rec_len.to_be_bytes());
        block[offset + 22..offset + 24].copy_from_slice(&(name.len() as u16).to_be_bytes());
        block[offset + 24..offset + 26].copy_from_slice(&8u16.to_be_bytes());
        block[offset + 40..offset + 40 + name.len()].copy_from_slice(name);
        offset + usize::from(rec_len)
    }

    /// A 512-byte leaf-like block: entries from offset 104, the last one to the end.
    fn block_with(names: &[&[u8]]) -> [u8; 512] {
        let mut block = [0u8; 512];
        let mut offset = LEAF_HEADER_SIZE;
        for (i, name) in names.iter().enumerate() {
            let rec_len = if i + 1 == names.len() {
                (512 - offset) as u16
            } else {
                ((DIRENT_HEADER_SIZE + name.len() + 7) & !7) as u16
            };
            offset = put_dirent(&mut block, offset, 100 + i as u64, name, rec_len);
        }
        block
    }

    fn scan(block: &[u8]) -> core::result::Result<Vec<Vec<u8>>, Corruption> {
        let mut names = Vec::new();
        scan_dirents(block, LEAF_HEADER_SIZE, 7, |_, name| {
            names.push(name.to_vec());
            Ok(())
        })?;
        Ok(names)
    }

    fn problem(block: &[u8]) -> DirentProblem {
        match scan(block) {
            Err(Corruption::BadDirent {
                block: 7, problem, ..
            }) => problem,
            other => panic!("expected a bad dirent, got {other:?}"),
        }
    }

    fn set_rec_len(block: &mut [u8], offset: usize, rec_len: u16) {
        block[offset + 20..offset + 22].copy_from_slice(&rec_len.to_be_bytes());
    }

    #[test]
    fn scans_entries_in_order() {
        let block = block_with(&[b".", b"..", b"hello"]);

        let names = scan(&block).unwrap();

        assert_eq!(names, [&b"."[..], b"..", b"hello"]);
    }

    #[test]
    fn skips_a_sentinel() {
        let mut block = block_with(&[b"gone", b"kept"]);
        block[LEAF_HEADER_SIZE..LEAF_HEADER_SIZE + 16].fill(0);

        assert_eq!(scan(&block).unwrap(), [b"kept"]);
    }

    #[test]
    fn rejects_bad_record_lengths() {
        let mut block = block_with(&[b"a", b"b"]);
        set_rec_len(&mut block, LEAF_HEADER_SIZE, 0);
        assert_eq!(problem(&block), DirentProblem::RecLenZero);

        set_rec_len(&mut block, LEAF_HEADER_SIZE, 20);
        assert_eq!(problem(&block), DirentProblem::RecLenTooShort(20));

        set_rec_len(&mut block, LEAF_HEADER_SIZE, 52);
        assert_eq!(problem(&block), DirentProblem::RecLenUnaligned(52));

        set_rec_len(&mut block, LEAF_HEADER_SIZE, 512);
        assert_eq!(problem(&block), DirentProblem::RecLenPastEnd(512));

        // The first entry ends 8 bytes short of the second one's header.
        set_rec_len(
            &mut block,
            LEAF_HEADER_SIZE,
            (512 - LEAF_HEADER_SIZE - 8) as u16,
        );
        assert_eq!(problem(&block), DirentProblem::HeaderPastEnd);
    }

    #[test]
    fn rejects_bad_names() {
        let mut block = block_with(&[b"a", b"b"]);
        block[LEAF_HEADER_SIZE + 22..LEAF_HEADER_SIZE + 24].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            problem(&block),
            DirentProblem::NameLenPastRecLen {
                name_len: 9,
                rec_len: 48
            }
        );

        block[LEAF_HEADER_SIZE + 22..LEAF_HEADER_SIZE + 24].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(problem(&block), DirentProblem::BadNameLen(0));

        let mut block = block_with(&[b"a", b"b"]);
        block[LEAF_HEADER_SIZE + 40] = b'c';
        assert_eq!(
            problem(&block),
            DirentProblem::HashMismatch(name_hash(b"a"))
        );
    }

    #[test]
    fn hash_slot_takes_the_top_bits() {
        assert_eq!(hash_slot(0xFFFF_FFFF, 8), 255);
        assert_eq!(hash_slot(0x8000_0000, 1), 1);
        assert_eq!(hash_slot(0x7FFF_FFFF, 17), 0xFFFF);
        assert_eq!(hash_slot(0xFFFF_FFFF, 0), 0);
        assert_eq!(hash_slot(0xFFFF_FFFF, 40), 0xFFFF_FFFF);
    }
}
