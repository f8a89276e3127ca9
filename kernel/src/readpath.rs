//! The cached-only read path shown and measured: a cold read, the same read hot, and a read
//! after another node of the cluster rewrote the file, each with what it cost.
//!
//! [`demo`] is what `cargo run` shows after the directory listing. Each read logs one line
//! with the glocks it took, the disk requests it made and the page-cache lookups that hit or
//! missed, so a person sees that a cold read takes the inode glock and reads blocks, and the
//! same read hot takes no glock and does no I/O.
//!
//! The remote write ([`write_as_other_node`]) plays node 2 of the simulated cluster
//! synchronously (one CPU, no scheduler): it asks for the inode glock in EX, which sends this
//! node its demote callback (node 1 drops the inode's pages and marks the size stale),
//! writes new content and a new size into the file's existing blocks and its dinode as that
//! machine would write the shared disk, and releases the glock. Node 1's next read misses,
//! takes the glock in SH, re-reads the dinode in `go_lock`, and sees the new size and data.
//!
//! # Limitations
//!
//! - Node 2 writes only within the blocks the file already has (no allocation): the new
//!   content may not be longer than the old one rounded up to whole blocks. Journaled-data
//!   files (whose blocks carry headers) are refused.

use alloc::vec;
use alloc::vec::Vec;

use fs::gfs2::glock::{LockError, LockModule};
use fs::gfs2::ondisk::{DIF_JDATA, DINODE_SIZE};
use fs::gfs2::{CachedInode, Error, GlockName, LockState, MountError, ReadPolicy};

use crate::block::DiskError;
use crate::fscache::{self, Counters, KernelMount, WriteError};
use crate::rootfs::{hex, lossy};
use crate::time::Instant;

/// The file of the demo disk the read-path demo reads.
pub const DEMO_FILE: &str = "/docs/numbered-lines.txt";

/// The largest read of one call the demo and the self-test make.
const MAX_READ: usize = 1 << 20;

/// Byte offset of `di_size` (big-endian) in a dinode.
const DI_SIZE_OFFSET: u64 = 56;

/// Why node 2 could not rewrite a file.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// The volume was mounted with `lock_nolock`: there is no other node.
    #[error("the volume is not mounted in a simulated cluster")]
    NoCluster,
    /// Looking the file up or mapping its blocks failed.
    #[error(transparent)]
    Filesystem(#[from] Error<DiskError>),
    /// The file is not one node 2 can rewrite in place.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The new content does not fit the blocks the file has.
    #[error("{len} bytes do not fit the {capacity} bytes the file's blocks hold")]
    TooLong {
        /// Bytes to write.
        len: usize,
        /// Bytes the file's blocks hold.
        capacity: u64,
    },
    /// The lock module refused node 2's EX request.
    #[error("node 2 could not take EX: {0}")]
    Lock(#[from] LockError),
    /// Writing the shared disk failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl defmt::Format for RemoteWriteError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// What one read returned and cost.
pub struct MeasuredRead {
    /// The bytes read.
    pub data: Vec<u8>,
    /// What the glocks, the cache and the disk did during the read.
    pub cost: Counters,
}

/// Reads up to `len` bytes of `inode` from `offset` in one call, and counts what it cost.
pub fn measured_read(
    mount: &KernelMount,
    inode: &CachedInode,
    offset: u64,
    len: usize,
) -> Result<MeasuredRead, MountError<DiskError>> {
    let mut data = vec![0; len];
    let before = fscache::counters();

    let read = mount.read(inode, offset, &mut data)?;

    let cost = fscache::counters().since(&before);
    data.truncate(read);
    Ok(MeasuredRead { data, cost })
}

/// Logs one read: what it was, how many bytes, and what it cost.
pub fn log_read(what: &str, path: &str, read: &MeasuredRead) {
    let cost = &read.cost;
    defmt::info!(
        "{=str} read of {=str}: {=usize} bytes; glock acquisitions {=u64}, block reads {=u64} ({=u64} disk blocks), cache hits {=u64}, misses {=u64}, pages read in {=u64}",
        what,
        path,
        read.data.len(),
        cost.glocks.acquisitions(),
        cost.disk.requests,
        cost.disk.blocks_read,
        cost.cache.hits,
        cost.cache.misses,
        cost.cache.pages_read
    );
}

/// The `cargo run` demo: [`DEMO_FILE`] read cold, hot, and again after node 2 rewrote it.
pub fn demo(mount: &KernelMount) {
    let inode = match mount.open(DEMO_FILE) {
        Ok(inode) => inode,
        Err(error) => {
            defmt::info!(
                "no read-path demo: {=str} is not on this volume ({})",
                DEMO_FILE,
                error
            );
            return;
        }
    };

    let mut first = None;
    for what in ["cold", "hot"] {
        match measured_read(mount, &inode, 0, MAX_READ) {
            Ok(read) => {
                log_read(what, DEMO_FILE, &read);
                first.get_or_insert(read.data);
            }
            Err(error) => {
                defmt::error!("{=str} read of {=str} failed: {}", what, DEMO_FILE, error);
                return;
            }
        }
    }
    let Some(old) = first else { return };

    let new = rewritten(&old);
    match write_as_other_node(mount, &inode, DEMO_FILE, &new) {
        Ok(()) => {}
        Err(error) => {
            defmt::warn!("node 2 could not rewrite {=str}: {}", DEMO_FILE, error);
            return;
        }
    }
    match measured_read(mount, &inode, 0, MAX_READ) {
        Ok(read) => {
            log_read("post-write", DEMO_FILE, &read);
            log_new_version(&read.data, &new);
        }
        Err(error) => defmt::error!("read of {=str} failed: {}", DEMO_FILE, error),
    }
}

/// What node 2 writes over `old`: a first line that says so, then the old text from its
/// second line on, cut to two thirds of the old size (so the size changes too).
pub fn rewritten(old: &[u8]) -> Vec<u8> {
    let mut new = b"Rewritten by node 2 under EX.\n".to_vec();
    let rest = old
        .iter()
        .position(|&byte| byte == b'\n')
        .map_or(&old[..0], |end| &old[end + 1..]);
    let len = (old.len() * 2 / 3).max(new.len());
    new.extend_from_slice(rest);
    new.resize(len, b'.');
    new
}

/// Logs what node 1 read after node 2's write, and whether it is exactly what node 2 wrote.
pub fn log_new_version(read: &[u8], written: &[u8]) {
    let first_line_end = read
        .iter()
        .position(|&byte| byte == b'\n')
        .unwrap_or(read.len());
    defmt::info!(
        "node 1 sees size {=usize} (node 2 wrote {=usize}), first line {=str:?}, data as node 2 wrote it: {=bool}",
        read.len(),
        written.len(),
        lossy(&read[..first_line_end.min(80)]).as_str(),
        read == written
    );
}

/// Plays node 2: takes the inode glock of `inode` in EX (node 1 is asked to demote and drops
/// the inode's pages), writes `content` into the file's blocks and its length into the
/// dinode on the shared disk, and releases the glock.
pub fn write_as_other_node(
    mount: &KernelMount,
    inode: &CachedInode,
    path: &str,
    content: &[u8],
) -> Result<(), RemoteWriteError> {
    let (Some(node), Some(disk)) = (fscache::other_node(), fscache::disk()) else {
        return Err(RemoteWriteError::NoCluster);
    };
    let filesystem = mount.filesystem();
    let block_size = u64::from(filesystem.block_size());
    let on_disk = filesystem.read_inode(inode.addr())?;
    if on_disk.dinode().flags & DIF_JDATA != 0 {
        return Err(RemoteWriteError::Unsupported(
            "a journaled-data file is not rewritten in place",
        ));
    }
    let capacity = if on_disk.is_stuffed() {
        block_size - DINODE_SIZE as u64
    } else {
        on_disk.size().div_ceil(block_size) * block_size
    };
    if content.len() as u64 > capacity {
        return Err(RemoteWriteError::TooLong {
            len: content.len(),
            capacity,
        });
    }
    let mut targets = Vec::new();
    if on_disk.is_stuffed() {
        targets.push((inode.addr() * block_size + DINODE_SIZE as u64, content));
    } else {
        for (lblock, chunk) in (0..).zip(content.chunks(block_size as usize)) {
            let block =
                filesystem
                    .map_block(&on_disk, lblock)?
                    .ok_or(RemoteWriteError::Unsupported(
                        "the file has a hole where node 2 would write",
                    ))?;
            targets.push((block * block_size, chunk));
        }
    }
    let name = GlockName::inode(inode.addr());
    let before = fscache::counters();

    node.lock(name, LockState::Unlocked, LockState::Exclusive)?;
    let demoted = fscache::counters().since(&before);
    defmt::info!(
        "node 2 took EX on inode {=u64} ({=str}): node 1 ran {=u64} demote and dropped {=u64} cached pages",
        inode.addr(),
        path,
        demoted.glocks.demotes,
        demoted.glocks.pages_invalidated
    );
    let written = write_content(disk, &targets, inode.addr() * block_size, content.len());
    node.demote(name, LockState::Exclusive, LockState::Unlocked);
    written?;

    defmt::info!(
        "node 2 wrote {=usize} bytes and size {=usize} to {=str} on {=str} and released EX",
        content.len(),
        content.len(),
        path,
        disk.disk().name()
    );
    Ok(())
}

/// Writes each (byte offset, bytes) target and the new size into the dinode at `dinode`.
fn write_content(
    disk: &fscache::ClusterDisk,
    targets: &[(u64, &[u8])],
    dinode: u64,
    size: usize,
) -> Result<(), WriteError> {
    for &(offset, bytes) in targets {
        disk.write(offset, bytes)?;
    }
    disk.write(dinode + DI_SIZE_OFFSET, &(size as u64).to_be_bytes())?;
    Ok(())
}

/// SHA-256 of `bytes`, in hexadecimal.
pub fn sha256_hex(bytes: &[u8]) -> alloc::string::String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// The file of the fixture image the self-test reads cold, hot and always locking.
pub const SELFTEST_FILE: &str = "/nine-mib";

/// The file of the fixture image node 2 rewrites in the self-test.
pub const SELFTEST_REMOTE_FILE: &str = "/one-mib";

/// Logs one self-test read as `cache-selftest STEP: bytes=N glocks=N block_reads=N
/// blocks_read=N cache_hits=N cache_misses=N sha256=HEX`, for the runner's tests.
fn log_step(step: &str, read: &MeasuredRead) {
    let cost = &read.cost;
    defmt::info!(
        "cache-selftest {=str}: bytes={=usize} glocks={=u64} block_reads={=u64} blocks_read={=u64} cache_hits={=u64} cache_misses={=u64} sha256={=str}",
        step,
        read.data.len(),
        cost.glocks.acquisitions(),
        cost.disk.requests,
        cost.disk.blocks_read,
        cost.cache.hits,
        cost.cache.misses,
        sha256_hex(&read.data).as_str()
    );
}

/// Why the self-test stopped.
#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    /// A read failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// What failed.
        source: MountError<DiskError>,
    },
    /// Node 2 could not write.
    #[error(transparent)]
    RemoteWrite(#[from] RemoteWriteError),
}

impl defmt::Format for SelftestError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// The in-QEMU check of the read path (`cache-selftest`), on the fixture image mounted in a
/// simulated cluster. It logs each read's cost and the SHA-256 of what it read; the runner's
/// tests (`runner/tests/cache.rs`) assert on them:
///
/// 1. `cold-call-I`, eight reads of 200,000 bytes 1 MiB apart in [`SELFTEST_FILE`]: one glock
///    each, and blocks read; `hot-call-I`, the same reads again: no glock, no I/O;
/// 2. `whole-first`, the whole file in one call; `whole-hot`, again; then
///    `whole-always-lock`, again with the cached-only step switched off: the same data, a
///    glock taken;
/// 3. `remote-before`, [`SELFTEST_REMOTE_FILE`] read whole; node 2 rewrites it under EX
///    ([`rewritten`]); `remote-after`: the new size and data, read under a new glock.
pub fn selftest(mount: &KernelMount) -> Result<(), SelftestError> {
    let open = |path: &'static str| {
        mount
            .open(path)
            .map_err(|source| SelftestError::Read { path, source })
    };
    let read = |inode: &CachedInode, path: &'static str, offset: u64, len: usize| {
        measured_read(mount, inode, offset, len)
            .map_err(|source| SelftestError::Read { path, source })
    };
    let inode = open(SELFTEST_FILE)?;

    for pass in ["cold", "hot"] {
        for call in 0..8u64 {
            let offset = call * MAX_READ as u64 + 12345;
            let measured = read(&inode, SELFTEST_FILE, offset, 200_000)?;
            log_step(&alloc::format!("{pass}-call-{call}"), &measured);
        }
    }

    // Larger than either file: each read takes the whole file in one call.
    let whole = 10 * MAX_READ;
    log_step("whole-first", &read(&inode, SELFTEST_FILE, 0, whole)?);
    log_step("whole-hot", &read(&inode, SELFTEST_FILE, 0, whole)?);
    mount.set_read_policy(ReadPolicy::AlwaysLock);
    let always = read(&inode, SELFTEST_FILE, 0, whole);
    mount.set_read_policy(ReadPolicy::CachedFirst);
    log_step("whole-always-lock", &always?);

    let remote = open(SELFTEST_REMOTE_FILE)?;
    let before = read(&remote, SELFTEST_REMOTE_FILE, 0, whole)?;
    log_step("remote-before", &before);
    log_step(
        "remote-before-hot",
        &read(&remote, SELFTEST_REMOTE_FILE, 0, whole)?,
    );
    let new = rewritten(&before.data);
    write_as_other_node(mount, &remote, SELFTEST_REMOTE_FILE, &new)?;
    let after = read(&remote, SELFTEST_REMOTE_FILE, 0, whole)?;
    log_step("remote-after", &after);
    defmt::info!(
        "cache-selftest remote-write: old_size={=usize} new_size={=usize} written_sha256={=str} matches={=bool}",
        before.data.len(),
        new.len(),
        sha256_hex(&new).as_str(),
        after.data == new
    );
    log_step(
        "remote-after-hot",
        &read(&remote, SELFTEST_REMOTE_FILE, 0, whole)?,
    );
    defmt::info!("cache-selftest done");
    Ok(())
}

/// The file of the benchmark image (`runner bench`).
pub const BENCH_FILE: &str = "/bench-64m";

/// Bytes per read call of the benchmark's whole-file passes.
const BENCH_CHUNK: usize = 1 << 20;

/// How many cached 4 KiB reads the benchmark times.
const BENCH_SMALL_READS: u64 = 20_000;

/// Reads [`BENCH_FILE`] whole cold, then hot, in 1 MiB calls, then times cached 4 KiB
/// reads; logs one line: `bench arch=A file_bytes=N cold_mb_s=X hot_mb_s=X
/// cached_4k_read_ns=N cold_glocks=N hot_glocks=N hot_block_reads=N` (MB = 10^6 bytes, one
/// decimal).
pub fn bench(mount: &KernelMount) -> Result<(), SelftestError> {
    let inode = mount
        .open(BENCH_FILE)
        .map_err(|source| SelftestError::Read {
            path: BENCH_FILE,
            source,
        })?;
    let mut buffer = vec![0; BENCH_CHUNK];
    let mut pass = || -> Result<(u64, u64, Counters), SelftestError> {
        let before = fscache::counters();
        let start = Instant::now();
        let mut offset = 0;
        loop {
            let read =
                mount
                    .read(&inode, offset, &mut buffer)
                    .map_err(|source| SelftestError::Read {
                        path: BENCH_FILE,
                        source,
                    })?;
            if read == 0 {
                break;
            }
            offset += read as u64;
        }
        Ok((
            offset,
            Instant::now().nanos_since(start),
            fscache::counters().since(&before),
        ))
    };
    let (bytes, cold_ns, cold) = pass()?;
    let (_, hot_ns, hot) = pass()?;

    let pages = bytes.div_ceil(4096).max(1);
    let mut small = [0; 4096];
    let start = Instant::now();
    for i in 0..BENCH_SMALL_READS {
        let offset = (i * 7919 % pages) * 4096;
        mount
            .read(&inode, offset, &mut small)
            .map_err(|source| SelftestError::Read {
                path: BENCH_FILE,
                source,
            })?;
    }
    let small_ns = Instant::now().nanos_since(start) / BENCH_SMALL_READS;

    let (cold_rate, hot_rate) = (
        tenths_mb_per_s(bytes, cold_ns),
        tenths_mb_per_s(bytes, hot_ns),
    );
    defmt::info!(
        "bench arch={=str} file_bytes={=u64} cold_mb_s={=u64}.{=u64} hot_mb_s={=u64}.{=u64} cached_4k_read_ns={=u64} cold_glocks={=u64} hot_glocks={=u64} hot_block_reads={=u64}",
        crate::arch::NAME,
        bytes,
        cold_rate / 10,
        cold_rate % 10,
        hot_rate / 10,
        hot_rate % 10,
        small_ns,
        cold.glocks.acquisitions(),
        hot.glocks.acquisitions(),
        hot.disk.requests
    );
    Ok(())
}

/// `bytes` in `nanos` as tenths of MB (10^6 bytes) per second.
fn tenths_mb_per_s(bytes: u64, nanos: u64) -> u64 {
    let tenths = u128::from(bytes) * 10_000 / u128::from(nanos.max(1));
    u64::try_from(tenths).unwrap_or(u64::MAX)
}
