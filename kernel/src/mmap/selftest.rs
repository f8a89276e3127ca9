//! `mmap-selftest`: gfs2 files read through file mappings, with the counters that show which
//! step of the fault served each page. The runner's `tests/mmap.rs` checks the log lines.
//!
//! On the volume mounted as node 1 of a simulated cluster, for each regular file in the root
//! directory of 1 byte to [`MAX_FILE_SIZE`]:
//!
//! - `mmap PATH: N bytes, sha256 HEX; cold: F faults, R retries, G glocks; hot: F faults;
//!   remapped: F faults, R retries, G glocks`: the file mapped and read through memory three
//!   times: cold (each miss takes the glock), hot through the same mapping (no fault), and
//!   after unmapping and mapping again (every page faults, the `FAULT_CACHED` step maps it:
//!   no retry, no glock);
//! - `mmap past the end of PATH: ...`: a read one page past the end of the first file fails,
//!   and a read inside it afterwards works;
//! - `mmap coherence on PATH: ...`: node 2 takes EX on the first file of at least two
//!   allocated pages, whose demote unmaps its pages, writes two pages, releases; the same
//!   mapping then faults again and shows what node 2 wrote;
//! - `mmap under the glock of PATH, node 2 waiting for EX: ...`: the kernel half of Linux
//!   5.16's fix for mmap + page fault deadlocks (see [`cached_only_under_the_glock`]);
//! - `mmap read into a mapping of PATH, node 2 asking for EX: ...`: the whole fix: a gfs2 read
//!   whose destination is a private mapping of the same file, while node 2 asks for EX,
//!   finishes with node 2's data (see [`read_into_a_mapping_of_the_same_file`]).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;

use fs::gfs2::glock::{DemoteHandler, LockModule};
use fs::gfs2::ondisk::DIF_JDATA;
use fs::gfs2::{FileType, GlockName, Inode, LockState};
use sha2::{Digest, Sha256};

use fs::pagecache::ReadBuffer;

use super::{MappingBuffer, map_file};
use crate::arch::{self, Fault};
use crate::fscache::{self, KernelMount};
use crate::rootfs::{hex, lossy};
use crate::vm::{self, FileMapping, MapMode, PAGE_SIZE};

/// Files larger than this are left out: every page of a mapped file stays pinned while it is
/// mapped, and the test reads each three times.
pub const MAX_FILE_SIZE: u64 = 2 << 20;

/// Pages of the coherence file that node 2 rewrites.
const PAGES_REWRITTEN: u64 = 2;

/// What the page faults and the glocks did during one pass over a mapping.
#[derive(Clone, Copy, Debug, Default)]
struct PassCost {
    faults: u64,
    retries: u64,
    glocks: u64,
    pages_unmapped: u64,
}

/// Counters to subtract from later ones.
struct Snapshot {
    vm: vm::Counters,
    glocks: u64,
}

impl Snapshot {
    fn take() -> Self {
        Self {
            vm: vm::counters(),
            glocks: fscache::counters().glocks.acquisitions(),
        }
    }

    fn cost(&self) -> PassCost {
        let now = Self::take();
        PassCost {
            faults: now.vm.faults - self.vm.faults,
            retries: now.vm.retries - self.vm.retries,
            glocks: now.glocks - self.glocks,
            pages_unmapped: now.vm.pages_unmapped - self.vm.pages_unmapped,
        }
    }
}

/// Runs the self-test on the mounted volume; returns whether every check passed.
pub fn run(mount: &'static KernelMount) -> bool {
    let Some(mount_arc) = fscache::mount_arc() else {
        defmt::error!("mmap selftest: no mounted volume");
        return false;
    };

    let Some(files) = root_files(mount) else {
        return false;
    };
    let mut failures = 0;
    for (path, size) in &files {
        if !read_three_times(&mount_arc, path, *size) {
            failures += 1;
        }
    }
    if let Some((path, size)) = files.first()
        && !read_past_the_end(&mount_arc, path, *size)
    {
        failures += 1;
    }
    match allocated_file(mount, &files) {
        Some(file) => {
            if !coherence(&mount_arc, &file) {
                failures += 1;
            }
            if !cached_only_under_the_glock(&mount_arc, &file) {
                failures += 1;
            }
            if !read_into_a_mapping_of_the_same_file(&mount_arc, &file) {
                failures += 1;
            }
        }
        None => {
            defmt::error!("mmap selftest: no file in / has two allocated pages");
            failures += 1;
        }
    }

    defmt::info!(
        "mmap selftest: {=usize} files mapped, {=usize} checks failed",
        files.len(),
        failures
    );
    failures == 0
}

/// The regular files of the root directory of 1 byte to [`MAX_FILE_SIZE`], by path, sorted;
/// `None` (logged) if the directory cannot be read.
fn root_files(mount: &KernelMount) -> Option<Vec<(String, u64)>> {
    let filesystem = mount.filesystem();
    let entries = match filesystem.read_dir(filesystem.root()) {
        Ok(entries) => entries,
        Err(error) => {
            defmt::error!("mmap selftest: reading / failed: {}", error);
            return None;
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let Ok(inode) = filesystem.open_entry(&entry) else {
            continue;
        };
        if inode.file_type() == FileType::Regular && (1..=MAX_FILE_SIZE).contains(&inode.size()) {
            files.push((alloc::format!("/{}", lossy(&entry.name)), inode.size()));
        }
    }
    files.sort();
    Some(files)
}

/// Reads `path` through a mapping cold, hot and after mapping it again; logs the hash and the
/// cost of each pass.
fn read_three_times(mount: &Arc<KernelMount>, path: &str, size: u64) -> bool {
    let inode = match mount.open(path) {
        Ok(inode) => inode,
        Err(error) => {
            defmt::error!("mmap {=str}: open failed: {}", path, error);
            return false;
        }
    };

    let mut passes = [([0; 32], PassCost::default()); 3];
    let mut mapping = None;
    for (pass, result) in passes.iter_mut().enumerate() {
        if pass != 1 {
            if let Some(old) = mapping.take() {
                vm::unmap(old);
            }
            match map_file(mount, &inode, 0, size as usize, MapMode::ReadOnly) {
                Ok(new) => mapping = Some(new),
                Err(error) => {
                    defmt::error!("mmap {=str}: mapping failed: {}", path, error);
                    return false;
                }
            }
        }
        let Some(current) = &mapping else {
            return false;
        };
        let before = Snapshot::take();
        match hash_mapping(current, size) {
            Ok(digest) => *result = (digest, before.cost()),
            Err(fault) => {
                defmt::error!("mmap {=str}: read through memory failed: {}", path, fault);
                if let Some(current) = mapping.take() {
                    vm::unmap(current);
                }
                return false;
            }
        }
    }
    if let Some(current) = mapping.take() {
        vm::unmap(current);
    }

    let [
        (cold_digest, cold),
        (hot_digest, hot),
        (remapped_digest, remapped),
    ] = passes;
    defmt::info!(
        "mmap {=str}: {=u64} bytes, sha256 {=str}; cold: {=u64} faults, {=u64} retries, {=u64} glocks; hot: {=u64} faults; remapped: {=u64} faults, {=u64} retries, {=u64} glocks",
        path,
        size,
        hex(&cold_digest).as_str(),
        cold.faults,
        cold.retries,
        cold.glocks,
        hot.faults,
        remapped.faults,
        remapped.retries,
        remapped.glocks
    );
    let same = cold_digest == hot_digest && cold_digest == remapped_digest;
    if !same {
        defmt::error!("mmap {=str}: the passes read different data", path);
    }
    same
}

/// Reads one page past the end of `path` through a mapping that reaches there: the access
/// fails, and a read inside the file works afterwards.
fn read_past_the_end(mount: &Arc<KernelMount>, path: &str, size: u64) -> bool {
    let Ok(inode) = mount.open(path) else {
        return false;
    };
    let file_len = size.next_multiple_of(PAGE_SIZE as u64) as usize;
    let Ok(mapping) = map_file(mount, &inode, 0, file_len + PAGE_SIZE, MapMode::ReadOnly) else {
        defmt::error!("mmap {=str}: mapping past the end failed", path);
        return false;
    };

    let past_the_end = arch::probe_read(mapping.start() + file_len);
    let inside = arch::probe_read(mapping.start());
    vm::unmap(mapping);

    match (past_the_end, inside) {
        (Err(fault), Ok(word)) => {
            defmt::info!(
                "mmap past the end of {=str}: a read at offset {=u64} ({=u64}-byte file) failed: {}; a read at offset 0 then returned {=u64:#x}",
                path,
                file_len as u64,
                size,
                fault,
                word
            );
            true
        }
        (past_the_end, inside) => {
            defmt::error!(
                "mmap past the end of {=str}: the read past the end {=str}, the read inside {=str}",
                path,
                if past_the_end.is_ok() {
                    "worked"
                } else {
                    "failed"
                },
                if inside.is_ok() { "worked" } else { "failed" }
            );
            false
        }
    }
}

/// A file whose first [`PAGES_REWRITTEN`] pages are allocated blocks (not holes, not
/// journaled data), for node 2 to rewrite.
struct AllocatedFile {
    path: String,
    size: u64,
    inode: Inode,
    /// The filesystem blocks of its first pages.
    blocks: Vec<u64>,
}

/// The first file of `files` of at least [`PAGES_REWRITTEN`] allocated pages.
fn allocated_file(mount: &KernelMount, files: &[(String, u64)]) -> Option<AllocatedFile> {
    let filesystem = mount.filesystem();
    let block_size = u64::from(filesystem.block_size());
    files.iter().find_map(|(path, size)| {
        let inode = filesystem.lookup(path).ok()?;
        if *size < PAGES_REWRITTEN * PAGE_SIZE as u64 || inode.dinode().flags & DIF_JDATA != 0 {
            return None;
        }
        let blocks_per_page = PAGE_SIZE as u64 / block_size;
        let blocks: Option<Vec<u64>> = (0..PAGES_REWRITTEN * blocks_per_page)
            .map(|lblock| filesystem.map_block(&inode, lblock).ok().flatten())
            .collect();
        Some(AllocatedFile {
            path: path.clone(),
            size: *size,
            inode,
            blocks: blocks?,
        })
    })
}

/// Node 2 takes EX on a mapped file, writes two pages, releases; the mapping then shows them.
fn coherence(mount: &Arc<KernelMount>, file: &AllocatedFile) -> bool {
    let filesystem = mount.filesystem();
    let (Some(other_node), Some(disk)) = (fscache::other_node(), fscache::disk()) else {
        defmt::error!("mmap coherence: the volume is not mounted in a simulated cluster");
        return false;
    };
    let block_size = u64::from(filesystem.block_size());
    let (path, size, fs_inode, blocks) = (file.path.as_str(), file.size, &file.inode, &file.blocks);
    let Ok(inode) = mount.open(path) else {
        return false;
    };
    let Ok(mapping) = map_file(mount, &inode, 0, size as usize, MapMode::ReadOnly) else {
        defmt::error!("mmap coherence: mapping {=str} failed", path);
        return false;
    };

    let before_digest = hash_mapping(&mapping, size);
    let mapped_before = arch::translate_page(mapping.start()).is_some();

    // Node 2: EX (node 1's demote runs in the callback: it holds no holder), a write, UN.
    let name = GlockName::inode(inode.addr());
    let demote = Snapshot::take();
    let locked = other_node.lock(name, LockState::Unlocked, LockState::Exclusive);
    let demote_cost = demote.cost();
    let mapped_after_demote = arch::translate_page(mapping.start()).is_some();
    let mut written = locked.is_ok();
    for (index, &block) in blocks.iter().enumerate() {
        let content = node_2_block("under EX", index, block_size as usize);
        written &= disk.write(block * block_size, &content).is_ok();
    }
    if locked.is_ok() {
        other_node.demote(name, LockState::Exclusive, LockState::Unlocked);
    }

    let after = Snapshot::take();
    let after_digest = hash_mapping(&mapping, size);
    let after_cost = after.cost();
    vm::unmap(mapping);
    let on_disk = crate::rootfs::read_whole(
        |offset, buffer| filesystem.read_at(fs_inode, offset, buffer),
        None,
    );

    let (Ok(before_digest), Ok(after_digest), Ok(on_disk)) = (before_digest, after_digest, on_disk)
    else {
        defmt::error!("mmap coherence on {=str}: a read failed", path);
        return false;
    };
    defmt::info!(
        "mmap coherence on {=str}: node 2 took EX (written {=bool}); the demote unmapped {=u64} pages (page 0 mapped before {=bool}, after {=bool}); then {=u64} faults, {=u64} retries, {=u64} glocks; sha256 before {=str}, after {=str}, on disk {=str}",
        path,
        written,
        demote_cost.pages_unmapped,
        mapped_before,
        mapped_after_demote,
        after_cost.faults,
        after_cost.retries,
        after_cost.glocks,
        hex(&before_digest).as_str(),
        hex(&after_digest).as_str(),
        hex(&on_disk).as_str()
    );
    written
        && mapped_before
        && !mapped_after_demote
        && after_cost.faults > 0
        && after_digest == on_disk
        && after_digest != before_digest
}

/// The mechanism of Linux 5.16's fix for mmap + page fault deadlocks, on a mapping of `path`.
///
/// A read holds the inode glock in SH while it copies; node 2 asks for EX, so the demote is
/// pending and no new holder is granted. A fault on a page of the same file whose second
/// step took the glock would wait for the demote, which waits for the read's holder: a
/// deadlock. Under [`vm::cached_only_faults`] the fault runs its `FAULT_CACHED` step only and
/// fails at once; the read then drops its glock (the demote runs, node 2 gets EX), brings the
/// page in with [`vm::fault_in`], and could retry.
fn cached_only_under_the_glock(mount: &Arc<KernelMount>, file: &AllocatedFile) -> bool {
    let filesystem = mount.filesystem();
    let path = file.path.as_str();
    let (Some(other_node), Ok(inode)) = (fscache::other_node(), mount.open(path)) else {
        defmt::error!("mmap under the glock: {=str} or node 2 is missing", path);
        return false;
    };
    let name = GlockName::inode(inode.addr());

    // Cold: node 2 takes EX and gives it back, which drops node 1's pages of the file.
    if other_node
        .lock(name, LockState::Unlocked, LockState::Exclusive)
        .is_err()
    {
        return false;
    }
    other_node.demote(name, LockState::Exclusive, LockState::Unlocked);
    let Ok(mapping) = map_file(mount, &inode, 0, PAGE_SIZE, MapMode::ReadOnly) else {
        return false;
    };

    // The read's holder; then node 2's request for EX reaches node 1 (the cluster's demote
    // callback: with one CPU, node 2's own wait for the grant cannot run meanwhile).
    let Ok(holder) = mount.glocks().acquire(name, LockState::Shared, &**mount) else {
        vm::unmap(mapping);
        return false;
    };
    mount.demote_requested(name, LockState::Unlocked);
    let under_glock = Snapshot::take();
    let fault_under_glock = {
        let _cached_only = vm::cached_only_faults();
        arch::probe_read(mapping.start())
    };
    let cost_under_glock = under_glock.cost();

    // The read drops its glock: the pending demote runs, and node 2 is granted EX at once.
    drop(holder);
    let node_1_after_drop = other_node.cluster().state_of(fscache::THIS_NODE, name);
    let node_2_granted = other_node
        .lock(name, LockState::Unlocked, LockState::Exclusive)
        .is_ok();
    if node_2_granted {
        other_node.demote(name, LockState::Exclusive, LockState::Unlocked);
    }

    let after = Snapshot::take();
    let faulted_in = vm::fault_in(mapping.start()..mapping.start() + PAGE_SIZE);
    let word = arch::probe_read(mapping.start());
    let cost_after = after.cost();
    vm::unmap(mapping);
    let mut expected = [0; 8];
    let expected = filesystem
        .read_at(&file.inode, 0, &mut expected)
        .ok()
        .map(|_| u64::from_ne_bytes(expected));
    let data_right = word.ok().is_some_and(|word| Some(word) == expected);

    let Err(fault) = fault_under_glock else {
        defmt::error!(
            "mmap under the glock of {=str}: a cold page mapped under cached-only faults",
            path
        );
        return false;
    };
    defmt::info!(
        "mmap under the glock of {=str}, node 2 waiting for EX: a cached-only fault on a cold page failed at once ({}) with {=u64} retries and {=u64} glocks; the read dropped its glock: node 1 {}, node 2 granted EX {=bool}; fault_in then mapped the page with {=u64} retries, {=u64} glocks (ok {=bool}), file data {=bool}",
        path,
        fault.kind,
        cost_under_glock.retries,
        cost_under_glock.glocks,
        node_1_after_drop,
        node_2_granted,
        cost_after.retries,
        cost_after.glocks,
        faulted_in.is_ok(),
        data_right
    );
    cost_under_glock.retries == 0
        && cost_under_glock.glocks == 0
        && node_1_after_drop == LockState::Unlocked
        && node_2_granted
        && faulted_in.is_ok()
        && cost_after.glocks == 1
        && data_right
}

/// What node 2 writes into the `index`th block it rewrites, in the test `when` names.
fn node_2_block(when: &str, index: usize, block_size: usize) -> Vec<u8> {
    let line = alloc::format!("node 2 wrote block {index} {when}\n");
    line.bytes().cycle().take(block_size).collect()
}

/// Linux 5.16's mmap + page fault deadlock, end to end: a gfs2 read of page 1 of a file into
/// a private mapping of page 0 of the same file, while node 2 asks for EX.
///
/// The file is cold, so the read takes the inode glock in SH and reads page 1 in (with
/// readahead, which goes forward: page 0 stays out of the cache). As the read starts
/// copying, node 2's request for EX arrives: the demote is pending behind the read's holder.
/// The copy's write fault on the mapping needs page 0; a fault that took the glock for it
/// would wait for the demote, which waits for the read. Instead the copy (cached-only
/// faults) stops at once, the read drops its glock (the demote runs), node 2 is granted EX
/// and rewrites the file's first pages, and the read faults its buffer in (taking the glock
/// in a holder of its own) and reads again: the mapping ends up with node 2's page 1, and
/// the file's page 0 stays as node 2 wrote it (the mapping's copy is private).
fn read_into_a_mapping_of_the_same_file(mount: &Arc<KernelMount>, file: &AllocatedFile) -> bool {
    let filesystem = mount.filesystem();
    let path = file.path.as_str();
    let block_size = filesystem.block_size() as usize;
    let (Some(node_2), Some(disk), Ok(inode)) =
        (fscache::other_node(), fscache::disk(), mount.open(path))
    else {
        defmt::error!(
            "mmap read into a mapping: {=str} or node 2 is missing",
            path
        );
        return false;
    };
    let name = GlockName::inode(inode.addr());

    // Cold: node 2 takes EX and gives it back, which drops node 1's pages of the file.
    if node_2
        .lock(name, LockState::Unlocked, LockState::Exclusive)
        .is_err()
    {
        return false;
    }
    node_2.demote(name, LockState::Exclusive, LockState::Unlocked);
    let Ok(mut mapping) = map_file(mount, &inode, 0, PAGE_SIZE, MapMode::Private) else {
        defmt::error!(
            "mmap read into a mapping: mapping page 0 of {=str} failed",
            path
        );
        return false;
    };

    let before = Snapshot::take();
    let reads_before = mount.read_stats();
    let (result, interference) = {
        let Some(buffer) = MappingBuffer::new(&mut mapping, 0..PAGE_SIZE) else {
            vm::unmap(mapping);
            return false;
        };
        let mut buffer = Node2AsksDuringTheRead {
            buffer,
            mount,
            name,
            write: &|| {
                file.blocks.iter().enumerate().all(|(index, &block)| {
                    let content = node_2_block("during a read", index, block_size);
                    disk.write(block * block_size as u64, &content).is_ok()
                })
            },
            seen: Interference::default(),
        };
        let result = mount.read_into(&inode, PAGE_SIZE as u64, &mut buffer);
        (result, buffer.seen)
    };
    let cost = before.cost();
    let reads = mount.read_stats();
    let fault_in_rounds = reads.fault_in_rounds - reads_before.fault_in_rounds;

    let in_mapping = hash_mapping(&mapping, PAGE_SIZE as u64);
    vm::unmap(mapping);
    let mut page_0 = alloc::vec![0; PAGE_SIZE];
    let page_0_read = mount.read(&inode, 0, &mut page_0);
    let mut on_disk = alloc::vec![0; 2 * PAGE_SIZE];
    let on_disk_read = filesystem.read_at(&file.inode, 0, &mut on_disk);

    let (Ok(in_mapping), Ok(_), Ok(_)) = (in_mapping, &page_0_read, on_disk_read) else {
        defmt::error!(
            "mmap read into a mapping of {=str}: a check read failed",
            path
        );
        return false;
    };
    let page_1_on_disk: [u8; 32] = Sha256::digest(&on_disk[PAGE_SIZE..]).into();
    let blocks_per_page = PAGE_SIZE / block_size;
    let node_2_data = on_disk[PAGE_SIZE..PAGE_SIZE + block_size]
        == node_2_block("during a read", blocks_per_page, block_size)[..];
    let page_0_unchanged = page_0 == on_disk[..PAGE_SIZE];
    let Some((copied_under_glock, copy_cost)) = interference.first_copy_under_glock else {
        defmt::error!(
            "mmap read into a mapping of {=str}: the read copied nothing under the glock",
            path
        );
        return false;
    };
    let returned = match &result {
        Ok(bytes) => *bytes as u64,
        Err(error) => {
            defmt::error!(
                "mmap read into a mapping of {=str}: the read failed: {}",
                path,
                error
            );
            return false;
        }
    };

    defmt::info!(
        "mmap read into a mapping of {=str}, node 2 asking for EX: node 2 asked while node 1 held the glock in {}; the copy under the glock stopped after {=usize} bytes with {=u64} retries, {=u64} glocks; node 2 granted EX {=bool} (wrote {=bool}); the read returned {=u64} bytes after {=u64} fault-in rounds, {=u64} glocks in all; the mapping holds sha256 {=str}, page 1 on disk {=str}, node 2's data {=bool}; page 0 of the file unchanged {=bool}",
        path,
        interference.asked_in.unwrap_or(LockState::Unlocked),
        copied_under_glock,
        copy_cost.retries,
        copy_cost.glocks,
        interference.node_2_granted,
        interference.node_2_wrote,
        returned,
        fault_in_rounds,
        cost.glocks,
        hex(&in_mapping).as_str(),
        hex(&page_1_on_disk).as_str(),
        node_2_data,
        page_0_unchanged
    );
    interference.asked_in == Some(LockState::Shared)
        && copied_under_glock == 0
        && copy_cost.retries == 0
        && copy_cost.glocks == 0
        && interference.node_2_granted
        && interference.node_2_wrote
        && returned == PAGE_SIZE as u64
        && fault_in_rounds >= 1
        && in_mapping == page_1_on_disk
        && node_2_data
        && page_0_unchanged
}

/// What [`Node2AsksDuringTheRead`] saw and did.
#[derive(Default)]
struct Interference {
    /// Node 1's glock state when node 2's request reached it.
    asked_in: Option<LockState>,
    /// The first copy with node 1's glock held: bytes copied and what the faults cost.
    first_copy_under_glock: Option<(usize, PassCost)>,
    node_2_granted: bool,
    node_2_wrote: bool,
}

/// A read's destination that plays node 2 at the moments a second CPU would: its request for
/// EX arrives as the read copies under the glock, and it takes EX, writes and releases as
/// soon as the read let the glock go (when the read faults the buffer in).
struct Node2AsksDuringTheRead<'a> {
    buffer: MappingBuffer<'a>,
    mount: &'a KernelMount,
    name: GlockName,
    /// Node 2's write of the file's first blocks; whether it worked.
    write: &'a dyn Fn() -> bool,
    seen: Interference,
}

impl ReadBuffer for Node2AsksDuringTheRead<'_> {
    fn len(&self) -> usize {
        self.buffer.len()
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        let state = self.mount.glocks().state(self.name);
        if self.seen.asked_in.is_some() || state == LockState::Unlocked {
            return self.buffer.copy_at(at, bytes);
        }

        // Node 2's request reaches node 1 (the cluster's demote callback): the read's holder
        // is granted, so the demote waits for it, and no new holder is granted meanwhile.
        self.mount.demote_requested(self.name, LockState::Unlocked);
        self.seen.asked_in = Some(state);
        let before = Snapshot::take();
        let copied = self.buffer.copy_at(at, bytes);
        self.seen.first_copy_under_glock = Some((copied, before.cost()));
        copied
    }

    fn fault_in(&mut self, range: Range<usize>) -> usize {
        if self.seen.asked_in.is_some()
            && !self.seen.node_2_granted
            && let Some(node_2) = fscache::other_node()
        {
            // The read dropped its holder, so the demote ran: node 2 is granted at once.
            self.seen.node_2_granted = node_2
                .lock(self.name, LockState::Unlocked, LockState::Exclusive)
                .is_ok();
            if self.seen.node_2_granted {
                self.seen.node_2_wrote = (self.write)();
                node_2.demote(self.name, LockState::Exclusive, LockState::Unlocked);
            }
        }
        self.buffer.fault_in(range)
    }
}

/// The SHA-256 of the first `size` bytes of `mapping`, read through memory: each page is
/// touched first ([`vm::fault_in`], so a failed fault is an error, not a stop) and then read.
fn hash_mapping(mapping: &FileMapping, size: u64) -> Result<[u8; 32], Fault> {
    let mut hasher = Sha256::new();
    let size = size as usize;
    let mut offset = 0;
    while offset < size {
        let len = PAGE_SIZE.min(size - offset);
        let range = mapping.start() + offset..mapping.start() + offset + len;
        vm::fault_in(range.clone())?;
        raw::with_mapped_bytes(range, |bytes| hasher.update(bytes));
        offset += len;
    }
    Ok(hasher.finalize().into())
}

mod raw {
    //! Reading a file mapping as a byte slice.

    use super::Range;

    /// Calls `f` with the bytes at `range`, a range of one page of a live file mapping that
    /// [`crate::vm::fault_in`] just mapped and that the caller holds borrowed; `f` must not
    /// unmap it.
    pub(super) fn with_mapped_bytes(range: Range<usize>, f: impl FnOnce(&[u8])) {
        // SAFETY: the range lies in one page of a file mapping that was just mapped (the
        // callers' contract), either read-only onto a page-cache frame pinned while it is
        // mapped (page-cache frames are written only while their page is being read in,
        // never while up to date and pinned) or onto the mapping's private copy, which only
        // `vm::copy_to_mapping` writes, with the mapping borrowed mutably: not while the
        // caller holds it borrowed. Nothing unmaps the page while the slice is used: on this
        // one CPU only a demote (which leaves private copies) or `vm::unmap` does, and `f`
        // calls neither (the callers' contract); the slice does not outlive `f`. Bytes are
        // plain data.
        let bytes = unsafe {
            core::slice::from_raw_parts(range.start as *const u8, range.end - range.start)
        };
        f(bytes);
    }
}
