//! How a run ended, and the runner's exit status for each ending.
//!
//! The kernel stops the machine with an `ExitCode` (kernel/src/main.rs) that reaches the
//! runner as QEMU's exit status, encoded differently on each architecture:
//!
//! | kernel `ExitCode` | riscv64 (`sifive_test`) | x86_64 (`isa-debug-exit`) |
//! | --- | --- | --- |
//! | `Success` = 0 | writes 0x5555, QEMU exits 0 | writes 0, QEMU exits 1 |
//! | `TestsFailed` = 1 | writes 0x1_3333, QEMU exits 1 | writes 1, QEMU exits 3 |
//! | `Panic` = 2 | writes 0x2_3333, QEMU exits 2 | writes 2, QEMU exits 5 |
//! | `Fault` = 3 | writes 0x3_3333, QEMU exits 3 | writes 3, QEMU exits 7 |
//! | `BootFailed` = 4 | writes 0x4_3333, QEMU exits 4 | writes 4, QEMU exits 9 |
//!
//! QEMU also exits with 1 when it cannot start (a bad option, a missing file), which on x86_64
//! is the same status as a successful kernel. So a status only counts as the kernel's when the
//! kernel was seen running: its logger writes one 0x00 byte before its first frame. On x86_64
//! a plain exit status 0 means the guest reset or powered off without the exit device (with
//! `-no-reboot`, a triple fault ends that way): a crash.
//!
//! [`RunnerStatus`] lists the runner's own exit statuses; `runner --help` prints the same table.

use std::fmt;
use std::time::Duration;

use crate::arch::Arch;

/// How QEMU ended, as the operating system reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuExit {
    /// QEMU exited with this status.
    Status(i32),
    /// QEMU was killed by this signal.
    Signal(i32),
}

/// How a run of the kernel in QEMU ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel did what was asked and stopped with `ExitCode::Success`.
    Success,
    /// The kernel stopped with `ExitCode::TestsFailed`: at least one in-kernel test failed.
    TestsFailed,
    /// The kernel panicked (`ExitCode::Panic`).
    KernelPanic,
    /// An unexpected trap stopped the kernel (`ExitCode::Fault`).
    KernelFault,
    /// The kernel could not use the firmware's boot data (`ExitCode::BootFailed`).
    BootFailed,
    /// QEMU did not run the kernel to a known end.
    QemuFailed(QemuFailure),
    /// The kernel did not stop within the timeout; the runner killed QEMU.
    Timeout(Duration),
    /// Ctrl-C: the runner killed QEMU.
    Interrupted,
}

/// Why QEMU is said to have failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QemuFailure {
    /// QEMU could not be started at all.
    SpawnFailed(String),
    /// QEMU exited before the kernel wrote anything (usually a bad option or a missing file).
    ExitedBeforeKernel(i32),
    /// A signal killed QEMU.
    Signal(i32),
    /// QEMU exited with a status that no kernel `ExitCode` maps to.
    UnknownStatus(i32),
    /// x86_64: the guest reset or powered off without writing to the exit device (with
    /// `-no-reboot` a triple fault ends this way).
    ResetWithoutExitDevice,
    /// Waiting for QEMU failed, so how it ended is unknown.
    Lost(String),
    /// The boot loader (U-Boot) did not start the kernel; the text is what it said. The runner
    /// stopped QEMU.
    BootLoaderFailed(String),
}

impl fmt::Display for QemuFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QemuFailure::SpawnFailed(reason) => write!(f, "could not start QEMU: {reason}"),
            QemuFailure::ExitedBeforeKernel(status) => write!(
                f,
                "QEMU exited with status {status} before the kernel wrote anything"
            ),
            QemuFailure::Signal(signal) => write!(f, "QEMU was killed by signal {signal}"),
            QemuFailure::UnknownStatus(status) => write!(
                f,
                "QEMU exited with status {status}, which is no kernel exit code"
            ),
            QemuFailure::ResetWithoutExitDevice => f.write_str(
                "the guest reset or shut down without the exit device (a triple fault?)",
            ),
            QemuFailure::Lost(reason) => write!(f, "lost track of QEMU: {reason}"),
            QemuFailure::BootLoaderFailed(reason) => {
                write!(f, "the boot loader did not start the kernel: {reason}")
            }
        }
    }
}

/// The kernel's `ExitCode` values (kernel/src/main.rs).
const KERNEL_SUCCESS: i32 = 0;
const KERNEL_TESTS_FAILED: i32 = 1;
const KERNEL_PANIC: i32 = 2;
const KERNEL_FAULT: i32 = 3;
const KERNEL_BOOT_FAILED: i32 = 4;

/// Turns QEMU's exit into an [`Outcome`]. `kernel_started` says whether the kernel's output
/// was seen; without it no status is taken as the kernel's.
pub fn classify_exit(arch: Arch, exit: QemuExit, kernel_started: bool) -> Outcome {
    let status = match exit {
        QemuExit::Signal(signal) => return Outcome::QemuFailed(QemuFailure::Signal(signal)),
        QemuExit::Status(status) => status,
    };

    let kernel_code = match arch {
        Arch::Riscv64 => status,
        Arch::X86_64 if status == 0 => {
            return Outcome::QemuFailed(QemuFailure::ResetWithoutExitDevice);
        }
        // isa-debug-exit: QEMU exits with (value << 1) | 1.
        Arch::X86_64 if status % 2 == 1 => status >> 1,
        Arch::X86_64 => return Outcome::QemuFailed(QemuFailure::UnknownStatus(status)),
    };

    if !kernel_started {
        return Outcome::QemuFailed(QemuFailure::ExitedBeforeKernel(status));
    }
    match kernel_code {
        KERNEL_SUCCESS => Outcome::Success,
        KERNEL_TESTS_FAILED => Outcome::TestsFailed,
        KERNEL_PANIC => Outcome::KernelPanic,
        KERNEL_FAULT => Outcome::KernelFault,
        KERNEL_BOOT_FAILED => Outcome::BootFailed,
        _ => Outcome::QemuFailed(QemuFailure::UnknownStatus(status)),
    }
}

impl Outcome {
    /// The runner's exit status for this outcome.
    pub fn runner_status(&self) -> RunnerStatus {
        match self {
            Outcome::Success => RunnerStatus::Success,
            Outcome::TestsFailed => RunnerStatus::TestsFailed,
            Outcome::KernelPanic => RunnerStatus::KernelPanic,
            Outcome::KernelFault => RunnerStatus::KernelFault,
            Outcome::BootFailed => RunnerStatus::BootFailed,
            Outcome::QemuFailed(_) => RunnerStatus::QemuFailed,
            Outcome::Timeout(_) => RunnerStatus::Timeout,
            Outcome::Interrupted => RunnerStatus::Interrupted,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("kernel exited: success"),
            Outcome::TestsFailed => f.write_str("kernel exited: kernel tests failed"),
            Outcome::KernelPanic => f.write_str("kernel exited: kernel panic"),
            Outcome::KernelFault => f.write_str("kernel exited: kernel fault (unexpected trap)"),
            Outcome::BootFailed => {
                f.write_str("kernel exited: the firmware's boot data could not be used")
            }
            Outcome::QemuFailed(failure) => write!(f, "QEMU failed: {failure}"),
            Outcome::Timeout(limit) => write!(
                f,
                "timeout: the kernel did not stop within {:.1} s; killed QEMU",
                limit.as_secs_f64()
            ),
            Outcome::Interrupted => f.write_str("interrupted; killed QEMU"),
        }
    }
}

/// The runner's exit statuses. The kernel's own outcomes keep the numbers of the kernel's
/// `ExitCode`; failures on the host come after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunnerStatus {
    Success = 0,
    TestsFailed = 1,
    KernelPanic = 2,
    KernelFault = 3,
    BootFailed = 4,
    QemuFailed = 5,
    Timeout = 6,
    BuildFailed = 7,
    QemuUnavailable = 8,
    /// The runner could not do its part: an unreadable kernel ELF, a file it could not write.
    RunnerError = 9,
    /// A `runner gfs2` command could not do what was asked of the image: a missing path, a
    /// corrupt filesystem.
    Gfs2Failed = 10,
    /// A bad command line (clap reports it).
    Usage = 64,
    Interrupted = 130,
}

impl RunnerStatus {
    /// Every status, in the order of the table in `--help`.
    pub const ALL: [RunnerStatus; 13] = [
        RunnerStatus::Success,
        RunnerStatus::TestsFailed,
        RunnerStatus::KernelPanic,
        RunnerStatus::KernelFault,
        RunnerStatus::BootFailed,
        RunnerStatus::QemuFailed,
        RunnerStatus::Timeout,
        RunnerStatus::BuildFailed,
        RunnerStatus::QemuUnavailable,
        RunnerStatus::RunnerError,
        RunnerStatus::Gfs2Failed,
        RunnerStatus::Usage,
        RunnerStatus::Interrupted,
    ];

    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the status means, for `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            RunnerStatus::Success => "the kernel did what was asked (every test passed)",
            RunnerStatus::TestsFailed => "at least one in-kernel test failed",
            RunnerStatus::KernelPanic => "the kernel panicked",
            RunnerStatus::KernelFault => "an unexpected trap (fault) stopped the kernel",
            RunnerStatus::BootFailed => "the kernel could not use the firmware's boot data",
            RunnerStatus::QemuFailed => {
                "QEMU failed to start, crashed, or exited without a kernel exit code"
            }
            RunnerStatus::Timeout => "the kernel did not stop within --timeout; QEMU was killed",
            RunnerStatus::BuildFailed => "building the kernel failed",
            RunnerStatus::QemuUnavailable => {
                "a host tool (QEMU, U-Boot, fsck.gfs2) is missing and could not be installed"
            }
            RunnerStatus::RunnerError => "the runner failed otherwise (unreadable kernel ELF, I/O)",
            RunnerStatus::Gfs2Failed => {
                "a gfs2 command failed on the image (no such path, a corrupt filesystem)"
            }
            RunnerStatus::Usage => "bad command line",
            RunnerStatus::Interrupted => "interrupted by Ctrl-C; QEMU was killed",
        }
    }

    /// The table of every status, one per line.
    pub fn table() -> String {
        RunnerStatus::ALL
            .iter()
            .map(|status| format!("  {:>3}  {}\n", status.code(), status.meaning()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn riscv64_status_is_the_kernel_exit_code() {
        let cases = [
            (0, Outcome::Success),
            (1, Outcome::TestsFailed),
            (2, Outcome::KernelPanic),
            (3, Outcome::KernelFault),
            (4, Outcome::BootFailed),
            (5, Outcome::QemuFailed(QemuFailure::UnknownStatus(5))),
        ];
        for (status, expected) in cases {
            assert_eq!(
                classify_exit(Arch::Riscv64, QemuExit::Status(status), true),
                expected,
                "status {status}"
            );
        }
    }

    #[test]
    fn x86_64_status_is_shifted_kernel_exit_code() {
        let cases = [
            (1, Outcome::Success),
            (3, Outcome::TestsFailed),
            (5, Outcome::KernelPanic),
            (7, Outcome::KernelFault),
            (9, Outcome::BootFailed),
            (11, Outcome::QemuFailed(QemuFailure::UnknownStatus(11))),
            (2, Outcome::QemuFailed(QemuFailure::UnknownStatus(2))),
        ];
        for (status, expected) in cases {
            assert_eq!(
                classify_exit(Arch::X86_64, QemuExit::Status(status), true),
                expected,
                "status {status}"
            );
        }
    }

    #[test]
    fn x86_64_plain_exit_is_a_crash() {
        for started in [false, true] {
            assert_eq!(
                classify_exit(Arch::X86_64, QemuExit::Status(0), started),
                Outcome::QemuFailed(QemuFailure::ResetWithoutExitDevice)
            );
        }
    }

    #[test]
    fn status_before_the_kernel_ran_is_qemus_own() {
        // QEMU exits 1 on a bad option: not a kernel success on x86_64, nor a test failure on
        // riscv64.
        for arch in Arch::ALL {
            assert_eq!(
                classify_exit(arch, QemuExit::Status(1), false),
                Outcome::QemuFailed(QemuFailure::ExitedBeforeKernel(1))
            );
        }
    }

    #[test]
    fn signal_is_a_crash() {
        assert_eq!(
            classify_exit(Arch::Riscv64, QemuExit::Signal(11), true),
            Outcome::QemuFailed(QemuFailure::Signal(11))
        );
    }

    #[test]
    fn runner_statuses_are_distinct() {
        let mut codes: Vec<u8> = RunnerStatus::ALL.iter().map(|s| s.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), RunnerStatus::ALL.len());
    }

    #[test]
    fn kernel_outcomes_keep_kernel_numbers() {
        assert_eq!(Outcome::Success.runner_status().code(), 0);
        assert_eq!(Outcome::TestsFailed.runner_status().code(), 1);
        assert_eq!(Outcome::KernelPanic.runner_status().code(), 2);
        assert_eq!(Outcome::KernelFault.runner_status().code(), 3);
        assert_eq!(Outcome::Interrupted.runner_status().code(), 130);
    }
}
