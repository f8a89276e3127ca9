//! The host side of the kernel: build it, boot it in QEMU, decode its defmt log, and tell how
//! the run ended.
//!
//! The `runner` program (`cargo run`) and the boot tests in `runner/tests/` share this
//! library:
//!
//! 1. [`build_kernel`] builds the kernel ELF for an [`Arch`] (once per process and setting);
//! 2. [`run`] makes sure QEMU is installed ([`qemu::ensure_qemu`]), boots the kernel as a
//!    [`RunConfig`] says, decodes the serial port's defmt frames as they arrive
//!    ([`decode`]) and returns a [`RunReport`]: the [`Outcome`], every decoded [`LogLine`]
//!    and the wall time.
//!
//! # Exit statuses of the runner
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | the kernel did what was asked (every test passed) |
//! | 1 | at least one in-kernel test failed |
//! | 2 | the kernel panicked |
//! | 3 | an unexpected trap (fault) stopped the kernel |
//! | 4 | the kernel could not use the firmware's boot data |
//! | 5 | QEMU failed to start, crashed, or exited without a kernel exit code |
//! | 6 | the kernel did not stop within `--timeout`; QEMU was killed |
//! | 7 | building the kernel failed |
//! | 8 | a host tool (QEMU, U-Boot, fsck.gfs2) is missing and could not be installed |
//! | 9 | the runner failed otherwise (unreadable kernel ELF, I/O) |
//! | 10 | a gfs2 command failed on the image (no such path, a corrupt filesystem) |
//! | 64 | bad command line |
//! | 130 | interrupted by Ctrl-C; QEMU was killed |
//!
//! The first five are the kernel's own `ExitCode`s; [`outcome`] explains how they travel
//! through QEMU's exit status on each architecture.

pub mod arch;
pub mod bench;
pub mod debian;
pub mod decode;
pub mod gfs2;
pub mod image;
mod interrupt;
pub mod kernel_build;
pub mod mkfs;
pub mod outcome;
pub mod qemu;
pub mod run;
pub mod uboot;

pub use arch::Arch;
pub use decode::{KernelSymbols, Level, LogLine, SerialItem, SourceLocation};
pub use interrupt::install_ctrl_c_handler;
pub use kernel_build::{BuildError, LogLevel, build_kernel};
pub use outcome::{Outcome, QemuFailure, RunnerStatus};
pub use qemu::{DiskBus, DiskImage};
pub use run::{BootLoader, Echo, ImageFormat, RunConfig, RunError, RunReport, run};

/// Anything that stops the runner before a run has an outcome.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the kernel failed: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Error {
    /// The runner's exit status for this error.
    pub fn runner_status(&self) -> RunnerStatus {
        match self {
            Error::Build(_) => RunnerStatus::BuildFailed,
            Error::Run(RunError::QemuSetup(_) | RunError::UBoot(uboot::UBootError::Missing(_))) => {
                RunnerStatus::QemuUnavailable
            }
            Error::Run(RunError::UBoot(
                uboot::UBootError::UnquotableCommandLine(_)
                | uboot::UBootError::CommandTooLong { .. },
            )) => RunnerStatus::Usage,
            Error::Run(_) => RunnerStatus::RunnerError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_status_table_matches_the_code() {
        // The module doc's table, row by row, against `RunnerStatus`.
        let doc = include_str!("lib.rs");
        for status in RunnerStatus::ALL {
            let row = format!("//! | {} | {} |", status.code(), status.meaning());
            let row = row.replace("--timeout", "`--timeout`");
            assert!(doc.contains(&row), "module doc lacks the row {row:?}");
        }
    }
}
