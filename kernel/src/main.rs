//! The kernel: boots on QEMU riscv64 (OpenSBI, U-Boot) and x86_64 (PVH), logs through defmt
//! and runs its in-kernel tests.
//!
//! The boot sequence, from the firmware to [`kernel_main`]:
//!
//! 1. The architecture's entry code (`arch::riscv64` or `arch::x86_64`) sets up a stack and
//!    page tables, enters the higher half, installs trap vectors, finds the console and the
//!    clock, and collects a [`BootInfo`] from the firmware's data.
//! 2. [`kernel_main`] logs what was found, hands free RAM to the frame allocator (minus every
//!    reservation), sets up the heap, and does what the command line asks.
//! 3. The kernel stops the machine with an [`ExitCode`] that the runner turns into its own
//!    exit status.
//!
//! # Command line
//!
//! | word | effect |
//! | --- | --- |
//! | `test` / `test=PATTERN` | run the in-kernel tests (those whose name contains PATTERN) |
//! | `fault=read` | read an unmapped address, to show the trap handler's report |
//! | `panic` | panic on purpose, to show the panic handler's report |
//! | `root=DISK` | mount gfs2 from that disk (`virtio0`, `initrd`, ...) instead of the first that has it |
//! | `cache-selftest` | mount the root filesystem in a simulated cluster and log what cold, hot, always-locking and after-remote-write reads cost |
//! | `bench` | read `/bench-64m` cold, hot and in cached 4 KiB reads; log one `bench ...` line |
//! | `cache_pages=N` | give the page cache N pages (default: half the free frames, at most 256 MiB) |
//! | `mmap-selftest` | mount the root filesystem as node 1 of a simulated cluster and read files through file mappings (`mmap::selftest`) |
//! | `sha256-all` / `sha256-all=BYTES` | mount the root filesystem and log the SHA-256 of every regular file (of at most BYTES bytes) |

#![no_std]
#![no_main]
// On the host, `cargo clippy --workspace` only type-checks the kernel; nothing calls the
// architecture entry points there.
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]

extern crate alloc;

mod arch;
mod block;
mod boot;
mod cmdline;
mod fault_tests;
mod fscache;
mod ktest;
mod log;
mod mem;
mod mmap;
mod panic;
mod readpath;
mod rootfs;
mod time;
mod vm;

use boot::BootInfo;
use cmdline::{Action, CommandLine};
use fscache::Locking;

/// How the kernel ends a run; the runner maps each to its own exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked for was done (and every test passed).
    Success = 0,
    /// At least one in-kernel test failed.
    TestsFailed = 1,
    /// The kernel panicked.
    Panic = 2,
    /// An unexpected trap (exception) stopped the kernel.
    Fault = 3,
    /// The firmware's boot data (device tree, PVH `start_info`) could not be used.
    BootFailed = 4,
}

/// The architecture-neutral kernel, entered once by the boot CPU.
pub fn kernel_main(boot_info: &BootInfo) -> ! {
    log_boot_info(boot_info);

    mem::init(boot_info);

    let command_line = CommandLine::parse(boot_info.command_line);
    for word in command_line.unknown_words() {
        defmt::warn!("ignoring unknown command line word {=str}", word);
    }

    let cache_capacity = command_line
        .cache_pages()
        .map_or(fscache::Capacity::Default, fscache::Capacity::Pages);

    let exit_code = match command_line.action() {
        Action::RunTests { filter } => {
            let summary = ktest::run_tests(filter);
            if summary.failed == 0 {
                ExitCode::Success
            } else {
                ExitCode::TestsFailed
            }
        }
        Action::Fault => fault_tests::deliberate_fault(),
        Action::Panic => panic!("panic requested on the command line"),
        Action::HashAllFiles { max_size } => {
            let disks = block::probe(boot_info);
            match rootfs::mount(&disks, command_line.root(), Locking::Nolock, cache_capacity) {
                Some(mount) => {
                    rootfs::hash_all_files(mount.filesystem(), max_size.unwrap_or(u64::MAX));
                    ExitCode::Success
                }
                None => ExitCode::BootFailed,
            }
        }
        Action::MmapSelftest => {
            let disks = block::probe(boot_info);
            let locking = Locking::SimulatedCluster;
            match rootfs::mount(&disks, command_line.root(), locking, cache_capacity) {
                Some(mount) if mmap::selftest::run(mount) => ExitCode::Success,
                Some(_) => ExitCode::TestsFailed,
                None => ExitCode::BootFailed,
            }
        }
        Action::CacheSelftest | Action::Bench => {
            let disks = block::probe(boot_info);
            let bench = command_line.action() == Action::Bench;
            let locking = if bench {
                Locking::Nolock
            } else {
                Locking::SimulatedCluster
            };
            match rootfs::mount(&disks, command_line.root(), locking, cache_capacity) {
                Some(mount) => {
                    let result = if bench {
                        readpath::bench(mount)
                    } else {
                        readpath::selftest(mount)
                    };
                    match result {
                        Ok(()) => ExitCode::Success,
                        Err(error) => {
                            defmt::error!("{}", error);
                            ExitCode::TestsFailed
                        }
                    }
                }
                None => ExitCode::BootFailed,
            }
        }
        Action::Boot => {
            defmt::info!("boot complete");
            let disks = block::probe(boot_info);
            let locking = Locking::SimulatedCluster;
            if let Some(mount) = rootfs::mount(&disks, command_line.root(), locking, cache_capacity)
            {
                rootfs::show(mount);
            }
            ExitCode::Success
        }
    };

    defmt::info!("stopping the machine: {}", exit_code);
    arch::exit(exit_code)
}

/// Logs what the firmware told us, for a person reading the boot log.
fn log_boot_info(boot_info: &BootInfo) {
    defmt::info!(
        "booting on {=str}, boot cpu {=u64}, kernel loaded at {=u64:#x}",
        arch::NAME,
        boot_info.boot_cpu_id,
        boot_info.kernel_load_address
    );

    for region in &boot_info.memory {
        defmt::info!(
            "memory: {=u64:#x}..{=u64:#x} ({=u64} MiB)",
            region.start,
            region.end,
            region.size() >> 20
        );
    }

    for reservation in &boot_info.reserved {
        defmt::info!(
            "reserved: {=u64:#x}..{=u64:#x} {}",
            reservation.range.start,
            reservation.range.end,
            reservation.kind
        );
    }

    defmt::info!("command line: {=str:?}", boot_info.command_line);
    defmt::info!("timer frequency: {=u64} Hz", boot_info.timer_frequency_hz);
    defmt::info!("console: {}", boot_info.console);
    defmt::debug!("firmware tables: {}", boot_info.firmware_tables);
    if let Some(initrd) = boot_info.initrd {
        defmt::info!("initrd: {=u64:#x}..{=u64:#x}", initrd.start, initrd.end);
    }
}
