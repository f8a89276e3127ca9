//! `runner bench`: the kernel's read benchmark on each architecture, as one table.
//!
//! Each run boots the kernel with `bench` and the bench image ([`crate::mkfs::bench_image`],
//! one 64 MiB file) as its disk. The kernel reads the file whole cold, then hot, in 1 MiB
//! calls, then times cached 4 KiB reads, and logs one line:
//! `bench arch=A file_bytes=N cold_mb_s=X hot_mb_s=X cached_4k_read_ns=N cold_glocks=N
//! hot_glocks=N hot_block_reads=N`. [`parse_bench_line`] reads it back and [`table`] prints
//! the results of all runs.
//!
//! QEMU runs under TCG with one CPU, so the figures measure the emulator on this host as much
//! as the kernel: compare architectures and cold with hot, not with real hardware.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::{Arch, DiskBus, DiskImage, LogLevel, RunConfig, RunReport};

/// What one benchmark run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// The architecture the kernel ran on.
    pub arch: String,
    /// Bytes of the file read in each pass.
    pub file_bytes: u64,
    /// Cold pass: MB (10^6 bytes) per second.
    pub cold_mb_s: f64,
    /// Hot pass: MB per second.
    pub hot_mb_s: f64,
    /// Mean cost of one cached 4 KiB read, in nanoseconds.
    pub cached_4k_read_ns: u64,
    /// Glock acquisitions of the cold pass.
    pub cold_glocks: u64,
    /// Glock acquisitions of the hot pass.
    pub hot_glocks: u64,
    /// Disk requests of the hot pass.
    pub hot_block_reads: u64,
}

/// Why a benchmark run gave no result.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Building the image or the kernel, or running QEMU, failed.
    #[error(transparent)]
    Runner(#[from] crate::Error),
    /// Building the bench image failed.
    #[error("cannot build the bench image: {0}")]
    Image(#[from] crate::mkfs::MkfsError),
    /// The kernel ran but logged no (valid) `bench` line.
    #[error("{arch}: the kernel logged no bench result ({outcome})")]
    NoResult {
        /// The architecture.
        arch: Arch,
        /// How the run ended.
        outcome: String,
    },
}

/// Reads a `bench key=value ...` message; `None` if it is not one or lacks a field.
pub fn parse_bench_line(message: &str) -> Option<BenchResult> {
    let fields: BTreeMap<&str, &str> = message
        .strip_prefix("bench ")?
        .split(' ')
        .filter_map(|field| field.split_once('='))
        .collect();
    let number = |key: &str| fields.get(key)?.parse::<u64>().ok();
    let rate = |key: &str| fields.get(key)?.parse::<f64>().ok();
    Some(BenchResult {
        arch: (*fields.get("arch")?).to_owned(),
        file_bytes: number("file_bytes")?,
        cold_mb_s: rate("cold_mb_s")?,
        hot_mb_s: rate("hot_mb_s")?,
        cached_4k_read_ns: number("cached_4k_read_ns")?,
        cold_glocks: number("cold_glocks")?,
        hot_glocks: number("hot_glocks")?,
        hot_block_reads: number("hot_block_reads")?,
    })
}

/// Boots the kernel of `arch` with `bench` on the bench image and returns what it measured.
pub fn run_bench(arch: Arch, timeout: Duration) -> Result<BenchResult, BenchError> {
    let image = crate::mkfs::bench_image()?;
    let kernel = crate::build_kernel(arch, LogLevel::Info).map_err(crate::Error::from)?;
    let mut config = RunConfig::new(arch, kernel);
    config.command_line = "bench".to_owned();
    config.timeout = timeout;
    config.disks.push(DiskImage {
        path: image,
        bus: DiskBus::default_for(arch),
        blkdebug_config: None,
    });
    let report: RunReport = crate::run(&config).map_err(crate::Error::from)?;
    report
        .messages()
        .find_map(parse_bench_line)
        .ok_or_else(|| BenchError::NoResult {
            arch,
            outcome: report.outcome.to_string(),
        })
}

/// The results as a Markdown table.
pub fn table(results: &[BenchResult]) -> String {
    let mut text = String::from(
        "| arch | file | cold read | hot read | cached 4 KiB read | glocks cold / hot | hot disk reads |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for result in results {
        let _ = writeln!(
            text,
            "| {} | {} MiB | {:.1} MB/s | {:.1} MB/s | {} ns | {} / {} | {} |",
            result.arch,
            result.file_bytes >> 20,
            result.cold_mb_s,
            result.hot_mb_s,
            result.cached_4k_read_ns,
            result.cold_glocks,
            result.hot_glocks,
            result.hot_block_reads
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_line_parses_and_a_broken_one_does_not() {
        let line = "bench arch=riscv64 file_bytes=67108864 cold_mb_s=41.5 hot_mb_s=310.0 \
                    cached_4k_read_ns=2100 cold_glocks=64 hot_glocks=0 hot_block_reads=0";
        let result = parse_bench_line(line).unwrap();

        assert_eq!(result.arch, "riscv64");
        assert_eq!(result.file_bytes, 64 << 20);
        assert_eq!((result.cold_mb_s, result.hot_mb_s), (41.5, 310.0));
        assert_eq!(result.cached_4k_read_ns, 2100);
        assert_eq!((result.cold_glocks, result.hot_glocks), (64, 0));
        assert!(
            table(&[result]).contains("| riscv64 | 64 MiB | 41.5 MB/s | 310.0 MB/s | 2100 ns |")
        );
        assert_eq!(parse_bench_line("bench arch=riscv64 cold_mb_s=1"), None);
        assert_eq!(parse_bench_line("benchmark done"), None);
    }
}
