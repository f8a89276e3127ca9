//! The cached-only read path in the kernel, on both architectures, asserted from the counters
//! the kernel logs.
//!
//! Booted with `cache-selftest` and the Linux-written fixture as its disk, the kernel mounts
//! it as node 1 of a simulated two-node cluster and logs one line per read:
//! `cache-selftest STEP: bytes=N glocks=N block_reads=N blocks_read=N cache_hits=N
//! cache_misses=N sha256=HEX` (see `kernel/src/readpath.rs`). These tests check that
//!
//! - a cold read takes one glock acquisition per read call and reads blocks;
//! - a read of fully cached data takes zero glock acquisitions and zero block reads;
//! - with the cached-only step switched off (always lock) the data is the same and only the
//!   counters differ;
//! - after node 2 took EX, wrote new content and a new size, and released, node 1 reads the
//!   new size and the new data (checked against the same rewrite computed here from the
//!   fixture), under a new glock.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{check, fixture_image, manifest, sha256_hex};
use drivers::block::RamDisk;
use fs::gfs2::Filesystem;
use runner::{Arch, DiskBus, DiskImage, LogLevel, Outcome, RunConfig, RunReport};

/// The counters and hash of one logged read.
type Step = BTreeMap<String, String>;

fn boot_selftest(arch: Arch) -> RunReport {
    let kernel = runner::build_kernel(arch, LogLevel::Info)
        .unwrap_or_else(|error| panic!("building the {arch} kernel: {error}"));
    let mut config = RunConfig::new(arch, kernel);
    config.command_line = "cache-selftest".to_owned();
    config.timeout = Duration::from_secs(240);
    config.disks.push(DiskImage {
        path: fixture_image().to_owned(),
        bus: DiskBus::default_for(arch),
        blkdebug_config: None,
    });
    runner::run(&config).unwrap_or_else(|error| panic!("running the {arch} kernel: {error}"))
}

/// Every `cache-selftest STEP: key=value ...` line, by step.
fn steps(report: &RunReport) -> BTreeMap<String, Step> {
    report
        .messages()
        .filter_map(|message| {
            let rest = message.strip_prefix("cache-selftest ")?;
            let (step, fields) = rest.split_once(": ")?;
            let fields = fields
                .split(' ')
                .filter_map(|field| field.split_once('='))
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect();
            Some((step.to_owned(), fields))
        })
        .collect()
}

fn number(report: &RunReport, step: &Step, key: &str) -> u64 {
    let value = step.get(key).and_then(|value| value.parse().ok());
    check(
        report,
        value.is_some(),
        &format!("no number {key} in {step:?}"),
    );
    value.unwrap()
}

/// The fixture's bytes of `path` from `offset`, at most `len`, read on the host.
fn fixture_bytes(path: &str, offset: u64, len: usize) -> Vec<u8> {
    let image = std::fs::read(fixture_image()).unwrap();
    let filesystem = Filesystem::open(RamDisk::new(&image, 4096).unwrap()).unwrap();
    let inode = filesystem.lookup(path).unwrap();
    let mut bytes = vec![0; len];
    let read = filesystem.read_at(&inode, offset, &mut bytes).unwrap();
    bytes.truncate(read);
    bytes
}

/// What node 2 writes over `old` (`readpath::rewritten` in the kernel): a first line that
/// says so, the old bytes after the old first line, cut or padded with `.` to two thirds of
/// the old size.
fn rewritten(old: &[u8]) -> Vec<u8> {
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

fn check_selftest(arch: Arch) {
    let report = boot_selftest(arch);
    check(
        &report,
        report.outcome == Outcome::Success,
        &format!("{arch}: the self-test did not end in success"),
    );
    check(
        &report,
        report
            .messages()
            .any(|message| message == "cache-selftest done"),
        "the self-test did not finish",
    );
    let steps = steps(&report);
    let step = |name: &str| -> &Step {
        let found = steps.get(name);
        check(&report, found.is_some(), &format!("no step {name}"));
        found.unwrap()
    };
    let field = |name: &str, key: &str| number(&report, step(name), key);
    let sha = |name: &str| step(name).get("sha256").cloned().unwrap_or_default();

    for call in 0..8u64 {
        let (cold, hot) = (format!("cold-call-{call}"), format!("hot-call-{call}"));
        let expected = fixture_bytes("/nine-mib", call * (1 << 20) + 12345, 200_000);
        check(
            &report,
            field(&cold, "glocks") == 1 && field(&cold, "block_reads") > 0,
            &format!("{cold}: a cold read takes one glock and reads blocks"),
        );
        check(
            &report,
            field(&hot, "glocks") == 0
                && field(&hot, "block_reads") == 0
                && field(&hot, "cache_misses") == 0,
            &format!("{hot}: a cached read takes no glock and does no I/O"),
        );
        check(
            &report,
            sha(&cold) == sha256_hex(&expected) && sha(&hot) == sha(&cold),
            &format!("{cold}/{hot}: the data is the fixture's"),
        );
    }

    let nine = &manifest()["/nine-mib"];
    check(
        &report,
        field("whole-first", "glocks") == 1
            && field("whole-first", "bytes") == nine.size
            && sha("whole-first") == nine.sha256,
        "the whole file in one call: one glock, the manifest's data",
    );
    check(
        &report,
        field("whole-hot", "glocks") == 0 && field("whole-hot", "block_reads") == 0,
        "the whole file again: no glock, no I/O",
    );
    check(
        &report,
        sha("whole-always-lock") == nine.sha256
            && field("whole-always-lock", "glocks") == 1
            && field("whole-always-lock", "block_reads") == 0,
        "always locking: the same data, a glock taken, still no I/O",
    );

    let one = &manifest()["/one-mib"];
    let new = rewritten(&fixture_bytes("/one-mib", 0, one.size as usize));
    let remote = step("remote-write");
    check(
        &report,
        sha("remote-before") == one.sha256
            && field("remote-before-hot", "glocks") == 0
            && field("remote-before-hot", "block_reads") == 0,
        "before the remote write: the manifest's data, then hot",
    );
    check(
        &report,
        number(&report, remote, "new_size") == new.len() as u64
            && remote.get("written_sha256") == Some(&sha256_hex(&new))
            && remote.get("matches").map(String::as_str) == Some("true"),
        "node 2 wrote the expected rewrite and node 1 read it whole",
    );
    check(
        &report,
        field("remote-after", "bytes") == new.len() as u64
            && sha("remote-after") == sha256_hex(&new)
            && field("remote-after", "glocks") == 1
            && field("remote-after", "block_reads") > 0,
        "after the remote write: the new size and data, read under a new glock",
    );
    check(
        &report,
        sha("remote-after-hot") == sha256_hex(&new)
            && field("remote-after-hot", "glocks") == 0
            && field("remote-after-hot", "block_reads") == 0,
        "the new data is cached again",
    );
}

#[test]
fn riscv64_reads_cached_data_without_glock_or_io() {
    check_selftest(Arch::Riscv64);
}

#[test]
fn x86_64_reads_cached_data_without_glock_or_io() {
    check_selftest(Arch::X86_64);
}
