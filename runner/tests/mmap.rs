//! gfs2 files read through kernel file mappings, on both architectures: the kernel boots with
//! `mmap-selftest` and the Linux-written fixture as its disk, and logs one line per file it
//! mapped (see `kernel/src/mmap/selftest.rs`), which is checked here against the manifest:
//!
//! - what a mapping reads has the manifest's SHA-256;
//! - the cold pass takes one fault per page, and only the faults that missed the cache take
//!   the glock (one acquisition per retry; readahead makes them fewer than the faults);
//! - a second pass over the same mapping takes no fault;
//! - after unmapping and mapping again, every page faults and its `FAULT_CACHED` step maps it:
//!   no retry and no glock acquisition;
//! - a read past the end of a file fails and the kernel goes on;
//! - after node 2 of the simulated cluster took EX and wrote, the demote had unmapped every
//!   page, and the same mapping faults again and shows what node 2 wrote;
//! - while a read holds the inode glock and node 2's EX is pending, a fault under
//!   cached-only faults fails at once without the glock; after the glock is dropped,
//!   `fault_in` maps the page (the mechanism of Linux 5.16's mmap deadlock fix);
//! - a gfs2 read of page 1 of a file into a private mapping of page 0 of the same file, while
//!   node 2 asks for EX, finishes (Linux 5.16's mmap + page fault deadlock): the copy under
//!   the glock stops at once without taking it, node 2 gets EX and writes, the read faults its
//!   buffer in and reads again, and the mapping holds what node 2 wrote.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{check, fixture_image, manifest, sha256_hex};
use runner::{Arch, DiskBus, DiskImage, LogLevel, Outcome, RunConfig, RunReport};

/// The kernel maps files up to this size (`mmap::selftest::MAX_FILE_SIZE`).
const MAX_FILE_SIZE: u64 = 2 << 20;

const PAGE_SIZE: u64 = 4096;

fn boot(arch: Arch, bus: DiskBus) -> RunReport {
    let kernel = runner::build_kernel(arch, LogLevel::Info)
        .unwrap_or_else(|error| panic!("building the {arch} kernel: {error}"));
    let mut config = RunConfig::new(arch, kernel);
    config.command_line = "mmap-selftest".to_owned();
    config.timeout = Duration::from_secs(240);
    config.disks.push(DiskImage {
        path: fixture_image().to_owned(),
        bus,
        blkdebug_config: None,
    });
    runner::run(&config).unwrap_or_else(|error| panic!("running the {arch} kernel: {error}"))
}

/// One `mmap PATH: ...` line: the hash and what each pass cost.
#[derive(Debug)]
struct MappedFile {
    sha256: String,
    /// Faults, retries, glock acquisitions of the cold pass.
    cold: [u64; 3],
    hot_faults: u64,
    /// Faults, retries, glock acquisitions after mapping again.
    remapped: [u64; 3],
}

/// The decimal numbers in `text`, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|word| !word.is_empty())
        .map(|word| word.parse().unwrap())
        .collect()
}

fn mapped_files(report: &RunReport) -> BTreeMap<String, MappedFile> {
    let mut files = BTreeMap::new();
    for message in report.messages() {
        let Some(rest) = message.strip_prefix("mmap /") else {
            continue;
        };
        let Some((head, tail)) = rest.split_once(" bytes, sha256 ") else {
            continue;
        };
        let (path, _size) = head.rsplit_once(": ").unwrap();
        let (sha256, costs) = tail.split_at(64);
        let costs = numbers(costs);
        check(
            report,
            costs.len() == 7,
            &format!("cannot read the costs of {message:?}"),
        );
        let file = MappedFile {
            sha256: sha256.to_owned(),
            cold: [costs[0], costs[1], costs[2]],
            hot_faults: costs[3],
            remapped: [costs[4], costs[5], costs[6]],
        };
        let previous = files.insert(format!("/{path}"), file);
        check(
            report,
            previous.is_none(),
            &format!("/{path} reported twice"),
        );
    }
    files
}

/// The text between `start` and the next `end` in `message`.
fn between<'m>(message: &'m str, start: &str, end: &str) -> Option<&'m str> {
    let (_, rest) = message.split_once(start)?;
    Some(rest.split_once(end).map_or(rest, |(value, _)| value))
}

fn check_mmap_selftest(report: &RunReport) {
    check(
        report,
        report.outcome == Outcome::Success,
        "the self-test did not succeed",
    );

    // Every regular file of the root directory of 1 byte to 2 MiB, read whole and right.
    let files = mapped_files(report);
    let expected: BTreeMap<&String, _> = manifest()
        .iter()
        .filter(|(path, file)| {
            path.matches('/').count() == 1 && (1..=MAX_FILE_SIZE).contains(&file.size)
        })
        .collect();
    check(
        report,
        files.keys().eq(expected.keys().copied()),
        &format!(
            "mapped {:?}, expected {:?}",
            files.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        ),
    );
    let (mut cold_faults, mut cold_retries) = (0, 0);
    for (path, file) in &files {
        let manifest_file = expected[path];
        let pages = manifest_file.size.div_ceil(PAGE_SIZE);
        check(
            report,
            file.sha256 == manifest_file.sha256,
            &format!("{path}: sha256 {} through the mapping", file.sha256),
        );
        let [faults, retries, glocks] = file.cold;
        check(
            report,
            faults == pages && glocks == retries && retries <= pages,
            &format!(
                "{path}: the cold pass of {pages} pages cost {:?}",
                file.cold
            ),
        );
        check(
            report,
            file.hot_faults == 0,
            &format!("{path}: the hot pass took {} faults", file.hot_faults),
        );
        check(
            report,
            file.remapped == [pages, 0, 0],
            &format!(
                "{path}: mapped again, {pages} pages should fault with no retry and no glock, got {:?}",
                file.remapped
            ),
        );
        cold_faults += faults;
        cold_retries += retries;
    }
    check(
        report,
        0 < cold_retries && cold_retries < cold_faults,
        "cold faults should retry under the glock, fewer times than they fault (readahead)",
    );

    // A read past the end of a file fails, and the kernel goes on.
    let past_the_end = report
        .messages()
        .find(|message| message.starts_with("mmap past the end of /"));
    check(
        report,
        past_the_end.is_some_and(|message| {
            message.contains(" failed: PageFault(Read) at address ")
                && message.contains("; a read at offset 0 then returned 0x")
        }),
        "no read past the end of a file that failed while the kernel went on",
    );

    // Coherence: the demote unmapped every page, the same mapping then showed node 2's data.
    let coherence = report
        .messages()
        .find(|message| message.starts_with("mmap coherence on /"))
        .unwrap_or_else(|| panic!("no coherence line\n{}", report.transcript()));
    let path = between(coherence, "mmap coherence on ", ":").unwrap();
    let file = &manifest()[path];
    let pages = file.size.div_ceil(PAGE_SIZE);
    let unmapped = between(coherence, "the demote unmapped ", " pages");
    let faults = numbers(between(coherence, "; then ", " glocks").unwrap());
    let hashes = coherence.split_once("; sha256 before ").unwrap().1;
    let (before, hashes) = hashes.split_once(", after ").unwrap();
    let (after, on_disk) = hashes.split_once(", on disk ").unwrap();
    check(
        report,
        coherence.contains("(written true)")
            && coherence.contains("(page 0 mapped before true, after false)")
            && unmapped == Some(pages.to_string().as_str()),
        &format!("{path}: the demote should unmap all {pages} mapped pages"),
    );
    check(
        report,
        faults.len() == 3 && faults[0] == pages && faults[1] == faults[2] && faults[2] > 0,
        &format!("{path}: after the demote every page should fault again, misses under the glock"),
    );
    check(
        report,
        before == file.sha256 && after == on_disk && after != before,
        &format!("{path}: the mapping should show node 2's data after the demote"),
    );

    // Under the glock, with node 2's EX pending, a fault is cached-only: it fails at once
    // instead of waiting for the glock; once the glock is dropped, fault_in maps the page.
    let under_glock = report
        .messages()
        .find(|message| message.starts_with("mmap under the glock of /"))
        .unwrap_or_else(|| {
            panic!(
                "no cached-only fault under the glock\n{}",
                report.transcript()
            )
        });
    check(
        report,
        under_glock.contains(
            "a cached-only fault on a cold page failed at once (PageFault(Read)) with 0 retries and 0 glocks",
        ) && under_glock.contains("node 1 Unlocked, node 2 granted EX true")
            && under_glock
                .contains("fault_in then mapped the page with 1 retries, 1 glocks (ok true), file data true"),
        "a cached-only fault under the glock should fail without the glock, and map after it",
    );

    // A read into a mapping of the same file while node 2 asks for EX finishes, with the data
    // node 2 wrote (its text for the file's block 1, which is page 1: the fixture has 4 KiB
    // blocks).
    let read_into = report
        .messages()
        .find(|message| message.starts_with("mmap read into a mapping of /"))
        .unwrap_or_else(|| {
            panic!(
                "no read into a mapping of the same file\n{}",
                report.transcript()
            )
        });
    let node_2_page: Vec<u8> = b"node 2 wrote block 1 during a read\n"
        .iter()
        .copied()
        .cycle()
        .take(PAGE_SIZE as usize)
        .collect();
    let in_mapping = between(read_into, "the mapping holds sha256 ", ",");
    let on_disk = between(read_into, "page 1 on disk ", ",");
    let rounds = between(read_into, "4096 bytes after ", " fault-in rounds")
        .and_then(|rounds| rounds.parse::<u64>().ok());
    check(
        report,
        read_into.contains(
            "node 2 asked while node 1 held the glock in Shared; the copy under the glock stopped after 0 bytes with 0 retries, 0 glocks; node 2 granted EX true (wrote true); the read returned 4096 bytes after ",
        ) && rounds.is_some_and(|rounds| rounds >= 1),
        "the read into a mapping of the same file should stop under the glock, let node 2 in and fault its buffer in",
    );
    check(
        report,
        in_mapping == Some(sha256_hex(&node_2_page).as_str())
            && on_disk == in_mapping
            && read_into.ends_with("node 2's data true; page 0 of the file unchanged true"),
        "the mapping should hold node 2's page 1 and the file's page 0 stay as it was",
    );

    let summary = format!(
        "mmap selftest: {} files mapped, 0 checks failed",
        expected.len()
    );
    check(
        report,
        report.messages().any(|message| message == summary),
        &format!("no `{summary}` line"),
    );
}

#[test]
fn riscv64_file_mappings_fault_cached_first() {
    check_mmap_selftest(&boot(Arch::Riscv64, DiskBus::Mmio));
}

#[test]
fn x86_64_file_mappings_fault_cached_first() {
    check_mmap_selftest(&boot(Arch::X86_64, DiskBus::Pci));
}
