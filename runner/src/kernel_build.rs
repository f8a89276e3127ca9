//! Builds the kernel for an architecture with cargo, once per process.
//!
//! The kernel is a non-default member of the workspace: the runner builds it with
//! `cargo build -p kernel --target <triple> --release` in the workspace root, with its own
//! target directory (`target/kernel`), because the cargo that started the runner (`cargo run`,
//! `cargo test`) may still hold the lock on `target/`. `DEFMT_LOG` chooses which log levels are
//! compiled in. Cargo's progress and errors go to stderr as they come.
//!
//! rustup installs the `targets` of rust-toolchain.toml only with a new toolchain, not for one
//! already installed, so a missing bare-metal target is added with `rustup target add` first.
//!
//! # Limitations
//!
//! `RUSTFLAGS` and `CARGO_ENCODED_RUSTFLAGS` are removed from cargo's environment: when set
//! they replace the per-target flags of `.cargo/config.toml` that the kernel needs (code
//! model, relocation model), and flags meant for the host rarely suit the kernel anyway.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use crate::arch::Arch;

/// Which defmt log levels are compiled into the kernel (`DEFMT_LOG`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The value of `DEFMT_LOG`.
    pub fn defmt_filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Why the kernel could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("could not run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("`rustc --print sysroot` failed: {0}")]
    Sysroot(String),
    #[error(
        "the Rust target {triple} is not installed and rustup is not available to add it \
         (run `rustup target add {triple}`)"
    )]
    TargetMissing { triple: &'static str },
    #[error("`rustup target add {triple}` failed ({status})")]
    RustupFailed {
        triple: &'static str,
        status: String,
    },
    #[error("`cargo build` of the kernel for {triple} failed ({status})")]
    CargoFailed {
        triple: &'static str,
        status: String,
    },
    #[error("cargo succeeded but the kernel ELF {0} is missing")]
    MissingOutput(PathBuf),
}

/// The workspace root: the runner's own crate lies one level below it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runner crate lies inside the workspace")
        .to_owned()
}

/// Where the runner keeps files it makes (flat images, padded firmware).
pub fn runner_output_dir() -> PathBuf {
    workspace_root().join("target").join("runner")
}

/// The cargo target directory of kernel builds.
fn kernel_target_dir() -> PathBuf {
    workspace_root().join("target").join("kernel")
}

/// Where cargo puts the kernel ELF for `arch`.
pub fn kernel_elf_path(arch: Arch) -> PathBuf {
    kernel_target_dir()
        .join(arch.target_triple())
        .join("release")
        .join("kernel")
}

type BuildResult = Result<PathBuf, BuildError>;

/// One build per architecture and log level, each done by whichever caller comes first.
type BuildSlots = HashMap<(Arch, LogLevel), Arc<OnceLock<BuildResult>>>;

/// Builds the kernel for `arch` with `log_level` and returns the ELF's path. Within a process
/// each combination is built once; concurrent callers (test threads) wait for that build.
pub fn build_kernel(arch: Arch, log_level: LogLevel) -> BuildResult {
    static BUILDS: LazyLock<Mutex<BuildSlots>> = LazyLock::new(Default::default);

    let slot = {
        let mut builds = BUILDS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        builds.entry((arch, log_level)).or_default().clone()
    };
    slot.get_or_init(|| build_uncached(arch, log_level)).clone()
}

fn build_uncached(arch: Arch, log_level: LogLevel) -> BuildResult {
    let root = workspace_root();
    let triple = arch.target_triple();
    ensure_rust_target(&root, triple)?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(&cargo)
        .args(["build", "-p", "kernel", "--target", triple, "--release"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", kernel_target_dir())
        .env("DEFMT_LOG", log_level.defmt_filter())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        // Cargo prints nothing useful on stdout; keep the runner's stdout for the kernel log.
        .stdout(std::io::stderr())
        .status()
        .map_err(|error| BuildError::Spawn {
            program: cargo.to_string_lossy().into_owned(),
            reason: error.to_string(),
        })?;
    if !status.success() {
        return Err(BuildError::CargoFailed {
            triple,
            status: status.to_string(),
        });
    }

    let elf = kernel_elf_path(arch);
    if !elf.is_file() {
        return Err(BuildError::MissingOutput(elf));
    }
    Ok(elf)
}

/// Makes sure the toolchain pinned for `root` has the standard library for `triple`.
fn ensure_rust_target(root: &Path, triple: &'static str) -> Result<(), BuildError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| BuildError::Spawn {
            program: rustc.to_string_lossy().into_owned(),
            reason: error.to_string(),
        })?;
    if !output.status.success() {
        return Err(BuildError::Sysroot(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if sysroot.join("lib").join("rustlib").join(triple).is_dir() {
        return Ok(());
    }

    eprintln!("runner: the Rust target {triple} is missing; running `rustup target add {triple}`");
    let status = match Command::new("rustup")
        .args(["target", "add", triple])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
    {
        Ok(status) => status,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(BuildError::TargetMissing { triple });
        }
        Err(error) => {
            return Err(BuildError::Spawn {
                program: "rustup".into(),
                reason: error.to_string(),
            });
        }
    };
    if !status.success() {
        return Err(BuildError::RustupFailed {
            triple,
            status: status.to_string(),
        });
    }
    Ok(())
}
