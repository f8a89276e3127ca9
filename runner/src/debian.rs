//! Installing the Debian packages behind programs and files the runner uses (QEMU,
//! `fsck.gfs2`, U-Boot).
//!
//! When a program is missing and the runner is root on Debian, it installs the package with
//! `apt-get`, saying so on stderr; elsewhere it stops with a message naming the packages.
//! One `apt-get` runs at a time in a process ([`apt_lock`]); callers check for the program
//! again after taking the lock, so a thread that waited sees what another one installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// An `apt-get` command that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` failed ({status})")]
pub struct AptError {
    /// The command line.
    pub command: String,
    /// Its exit status, or why it could not start.
    pub status: String,
}

/// Why a program the runner needs is not available.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error(
        "{program} missing; install the Debian package(s) {packages} \
         (`apt-get install {packages}`) or run the runner as root on Debian to have it done"
    )]
    CannotInstall { program: String, packages: String },
    #[error(transparent)]
    AptFailed(#[from] AptError),
    #[error("{program} still missing after installing {packages}")]
    StillMissing { program: String, packages: String },
}

/// Holds the process-wide `apt-get` lock.
pub fn apt_lock() -> MutexGuard<'static, ()> {
    static APT: Mutex<()> = Mutex::new(());
    APT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the runner may install packages: root on Debian.
pub fn may_install_packages() -> bool {
    rustix::process::geteuid().is_root() && std::path::Path::new("/etc/debian_version").is_file()
}

/// Runs `apt-get ARGS` non-interactively, its output on stderr.
pub fn apt_get(args: &[&str]) -> Result<(), AptError> {
    let command = format!("apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|error| AptError {
            command: command.clone(),
            status: error.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(AptError {
            command,
            status: status.to_string(),
        })
    }
}

/// Whether `program PROBE_ARGS` runs and succeeds.
pub fn program_runs(program: &str, probe_args: &[&str]) -> bool {
    Command::new(program)
        .args(probe_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Makes sure `fsck.gfs2` (Debian's `gfs2-utils`) runs, installing it if needed and
/// possible. Checked once per process.
pub fn ensure_fsck_gfs2() -> Result<(), PackageError> {
    static CHECKED: OnceLock<Result<(), PackageError>> = OnceLock::new();
    CHECKED
        .get_or_init(|| ensure_program("fsck.gfs2", &["-V"], &["gfs2-utils"]))
        .clone()
}

/// Makes sure `program` runs (probed as `program PROBE_ARGS`), installing the Debian
/// `packages` when it does not and the runner may.
pub fn ensure_program(
    program: &str,
    probe_args: &[&str],
    packages: &[&str],
) -> Result<(), PackageError> {
    ensure_present(program, || program_runs(program, probe_args), packages)
}

/// Makes sure the file `path` exists (firmware such as U-Boot), installing the Debian
/// `packages` that ship it when it does not and the runner may.
pub fn ensure_file(path: &Path, packages: &[&str]) -> Result<(), PackageError> {
    ensure_present(&path.display().to_string(), || path.is_file(), packages)
}

/// Installs `packages` when `is_present` says `what` is missing and the runner may; checks
/// again under the apt lock, and after installing.
fn ensure_present(
    what: &str,
    is_present: impl Fn() -> bool,
    packages: &[&str],
) -> Result<(), PackageError> {
    let _apt = apt_lock();
    if is_present() {
        return Ok(());
    }
    let package_list = packages.join(" ");
    if !may_install_packages() {
        return Err(PackageError::CannotInstall {
            program: what.to_owned(),
            packages: package_list,
        });
    }

    eprintln!("runner: {what} missing; installing the Debian package(s) {package_list}");
    apt_get(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(packages);
    apt_get(&install)?;

    if is_present() {
        Ok(())
    } else {
        Err(PackageError::StillMissing {
            program: what.to_owned(),
            packages: package_list,
        })
    }
}
