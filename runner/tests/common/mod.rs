//! Helpers the boot tests share: checking a run of the in-kernel tests and the boot log
//! (`boot.rs`, `uboot.rs`), and the Linux-written gfs2 fixture with its manifest, checked
//! against what `sha256-all` logs (`block.rs`, `uboot.rs`).
//!
//! Each test binary compiles this module and uses a part of it, so unused items are allowed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use runner::{Arch, Level, Outcome, RunReport};
use sha2::{Digest as _, Sha256};

/// Tests every in-kernel test run must include.
pub const KNOWN_KERNEL_TESTS: [&str; 4] = [
    "mem::frame::reserved_ranges_are_never_allocated",
    "time::clock_is_monotonic",
    "fault::unmapped_read_reports_page_fault",
    "mem::heap::survives_allocation_churn",
];

/// Files larger than this are skipped by the quicker runs (the kernel's `sha256-all=BYTES`).
pub const SIZE_LIMIT: u64 = 16 << 20;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fs/tests/data");

/// One regular file of the manifest.
#[derive(Debug)]
pub struct ManifestFile {
    pub size: u64,
    pub sha256: String,
}

/// The regular files of the 4 KiB fixture's manifest, by path.
pub fn manifest() -> &'static BTreeMap<String, ManifestFile> {
    static MANIFEST: OnceLock<BTreeMap<String, ManifestFile>> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join("gfs2-4k.manifest")).unwrap();
        text.lines()
            .filter_map(|line| {
                let columns: Vec<&str> = line.split('\t').collect();
                (columns.first() == Some(&"f")).then(|| {
                    let file = ManifestFile {
                        size: columns[2].parse().unwrap(),
                        sha256: columns[4].to_owned(),
                    };
                    (columns[5].to_owned(), file)
                })
            })
            .collect()
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The expected SHA-256 of an unpacked fixture from `gfs2-SHA256SUMS`.
pub fn listed_sha256(name: &str) -> String {
    let sums = std::fs::read_to_string(Path::new(FIXTURES).join("gfs2-SHA256SUMS")).unwrap();
    sums.lines()
        .find_map(|line| {
            let (sum, file) = line.split_once(char::is_whitespace)?;
            (file.trim_start_matches([' ', '*']) == name).then(|| sum.to_owned())
        })
        .unwrap_or_else(|| panic!("{name} is not in gfs2-SHA256SUMS"))
}

/// The 4 KiB-block fixture, unpacked once under the test's target directory (a copy left by
/// an earlier run is reused when its checksum still matches).
pub fn fixture_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("block-gfs2-4k.img");
        let expected = listed_sha256("gfs2-4k.img");
        if std::fs::read(&path).is_ok_and(|image| sha256_hex(&image) == expected) {
            return path;
        }

        let compressed = std::fs::read(Path::new(FIXTURES).join("gfs2-4k.img.xz")).unwrap();
        let mut image = Vec::new();
        lzma_rs::xz_decompress(&mut compressed.as_slice(), &mut image).unwrap();
        assert_eq!(sha256_hex(&image), expected, "the unpacked image");
        // Written aside and renamed, so a concurrent test never sees half an image.
        let partial = path.with_extension(format!("partial.{}", std::process::id()));
        std::fs::write(&partial, &image).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    })
}

/// Fails with the whole run's transcript unless `condition` holds.
#[track_caller]
pub fn check(report: &RunReport, condition: bool, what: &str) {
    assert!(
        condition,
        "{what}\n--- run transcript ---\n{}",
        report.transcript()
    );
}

/// The first decoded message starting with `prefix`.
pub fn message_starting<'r>(report: &'r RunReport, prefix: &str) -> Option<&'r str> {
    report
        .messages()
        .find(|message| message.starts_with(prefix))
}

/// Parses `0x...` (up to the first non-hex-digit).
pub fn parse_hex(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(digits.len());
    u64::from_str_radix(&digits[..end], 16).ok()
}

/// One `test NAME ... RESULT` line of the in-kernel test run.
pub struct KernelTestResult {
    pub name: String,
    pub passed: bool,
}

pub fn kernel_test_results(report: &RunReport) -> Vec<KernelTestResult> {
    report
        .lines
        .iter()
        .filter_map(|line| {
            let rest = line.message.strip_prefix("test ")?;
            let (name, result) = rest.split_once(" ... ")?;
            Some(KernelTestResult {
                name: name.to_owned(),
                passed: result.starts_with("ok (") && line.level == Some(Level::Info),
            })
        })
        .collect()
}

/// Checks a `test` boot: every test the kernel announced ran and passed, the known tests are
/// among them, the summary agrees, and the run ended in success.
pub fn check_every_kernel_test_passes(arch: Arch, report: &RunReport) {
    check(
        report,
        report.outcome == Outcome::Success,
        "the run did not succeed",
    );

    let announced: usize = message_starting(report, "running ")
        .and_then(|message| message.strip_suffix(" kernel tests"))
        .and_then(|count| count.strip_prefix("running "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no `running N kernel tests` line\n{}", report.transcript()));

    let results = kernel_test_results(report);
    check(
        report,
        results.len() == announced,
        &format!("{announced} tests announced, {} reported", results.len()),
    );
    for result in &results {
        check(
            report,
            result.passed,
            &format!("kernel test {} failed", result.name),
        );
    }
    let mut names: Vec<&str> = results.iter().map(|result| result.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    check(
        report,
        names.len() == results.len(),
        "a test name was reported twice",
    );
    for known in KNOWN_KERNEL_TESTS {
        check(
            report,
            names.contains(&known),
            &format!("kernel test {known} did not run"),
        );
    }
    let arch_prefix = format!("{}::", arch.name());
    check(
        report,
        names.iter().any(|name| name.starts_with(&arch_prefix)),
        &format!("no {arch_prefix} test ran"),
    );

    let summary = format!("test result: {announced} passed, 0 failed");
    check(
        report,
        report.messages().any(|message| message == summary),
        &format!("no summary line `{summary}`"),
    );
}

/// Checks that the boot log states the architecture, boot CPU, load address, memory,
/// reservations, command line and timer frequency.
pub fn check_boot_log(arch: Arch, report: &RunReport, command_line: &str, load_address: u64) {
    let booting = message_starting(report, "booting on ")
        .unwrap_or_else(|| panic!("no `booting on` line\n{}", report.transcript()));
    check(
        report,
        booting.starts_with(&format!("booting on {}, boot cpu ", arch.name())),
        "the boot line names another architecture",
    );
    let loaded_at = booting
        .split_once("kernel loaded at ")
        .and_then(|(_, address)| parse_hex(address));
    check(
        report,
        loaded_at == Some(load_address),
        &format!("the kernel should say it was loaded at {load_address:#x}"),
    );

    let memory_mib: u64 = report
        .messages()
        .filter_map(|message| message.strip_prefix("memory: "))
        .filter_map(|region| {
            region
                .split_once(" (")?
                .1
                .strip_suffix(" MiB)")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    check(
        report,
        (200..=256).contains(&memory_mib),
        &format!("memory regions add up to {memory_mib} MiB of the 256 MiB machine"),
    );

    let reservations: Vec<&str> = report
        .messages()
        .filter(|message| message.starts_with("reserved: "))
        .collect();
    for kind in ["KernelImage", "Firmware"] {
        check(
            report,
            reservations.iter().any(|line| line.contains(kind)),
            &format!("no {kind} reservation"),
        );
    }

    let expected_command_line = format!("command line: {command_line:?}");
    check(
        report,
        report
            .messages()
            .any(|message| message == expected_command_line),
        &format!("no `{expected_command_line}` line"),
    );

    let frequency: Option<u64> = message_starting(report, "timer frequency: ")
        .and_then(|message| {
            message
                .strip_prefix("timer frequency: ")?
                .strip_suffix(" Hz")
        })
        .and_then(|hz| hz.parse().ok());
    check(
        report,
        frequency.is_some_and(|hz| (1_000_000..=10_000_000_000).contains(&hz)),
        "no plausible timer frequency",
    );

    // Each line has a timestamp, a level and a location in the kernel's sources.
    for line in &report.lines {
        check(
            report,
            line.timestamp.is_some(),
            &format!("no timestamp: {line}"),
        );
        check(report, line.level.is_some(), &format!("no level: {line}"));
        let location = line
            .location
            .as_ref()
            .map(|location| location.file.as_str());
        check(
            report,
            location.is_some_and(|file| file.ends_with(".rs")),
            &format!("no source location: {line}"),
        );
    }
    check(
        report,
        report.malformed_frames == 0,
        "frames did not decode",
    );
}

/// What the kernel said about each file: its hash, that it skipped it, or that it failed.
#[derive(Debug, PartialEq, Eq)]
pub enum FileReport {
    Hashed(String),
    Skipped(u64),
    Failed(String),
}

pub fn file_reports(report: &RunReport) -> BTreeMap<String, FileReport> {
    let mut files = BTreeMap::new();
    for message in report.messages() {
        let Some(rest) = message.strip_prefix("file ") else {
            continue;
        };
        let (path, what) = if let Some((path, hash)) = rest.rsplit_once(" sha256 ") {
            (path, FileReport::Hashed(hash.to_owned()))
        } else if let Some((path, size)) = rest.rsplit_once(" skipped: ") {
            let size = size.trim_end_matches(" bytes").parse().unwrap();
            (path, FileReport::Skipped(size))
        } else if let Some((path, reason)) = rest.split_once(" read failed: ") {
            (path, FileReport::Failed(reason.to_owned()))
        } else {
            continue;
        };
        let previous = files.insert(path.to_owned(), what);
        check(
            report,
            previous.is_none(),
            &format!("{path} reported twice"),
        );
    }
    files
}

/// Checks that every manifest file was hashed right, or skipped for its size when a limit
/// was given, and that the kernel reported nothing else.
pub fn check_every_file(report: &RunReport, size_limit: Option<u64>, disk: &str) {
    check_every_file_on(report, size_limit, disk, None);
}

/// [`check_every_file`], and that the disk was found attached as `attachment`
/// (`virtio-mmio (legacy)`, `virtio-mmio`, `virtio-pci`).
pub fn check_every_file_on(
    report: &RunReport,
    size_limit: Option<u64>,
    disk: &str,
    attachment: Option<&str>,
) {
    if let Some(attachment) = attachment {
        let prefix = format!("disk {disk}: virtio-blk on {attachment}, ");
        check(
            report,
            report
                .messages()
                .any(|message| message.starts_with(&prefix)),
            &format!("no line starting {prefix:?}"),
        );
    }
    check(
        report,
        report.outcome == Outcome::Success,
        "the kernel did not exit successfully",
    );
    check(
        report,
        report
            .messages()
            .any(|message| message.starts_with(&format!("mounted gfs2 from {disk} "))),
        &format!("the kernel did not mount {disk}"),
    );

    let files = file_reports(report);
    for (path, expected) in manifest() {
        let expected_report = match size_limit {
            Some(limit) if expected.size > limit => FileReport::Skipped(expected.size),
            _ => FileReport::Hashed(expected.sha256.clone()),
        };
        check(
            report,
            files.get(path) == Some(&expected_report),
            &format!(
                "{path}: expected {expected_report:?}, got {:?}",
                files.get(path)
            ),
        );
    }
    let extra: Vec<_> = files
        .keys()
        .filter(|path| !manifest().contains_key(*path))
        .collect();
    check(
        report,
        extra.is_empty(),
        &format!("files not in the manifest: {extra:?}"),
    );
}
