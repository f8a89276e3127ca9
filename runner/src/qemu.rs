//! QEMU: making sure it is installed, and the command line that boots the kernel.
//!
//! A fresh Debian machine needs nothing by hand: when the emulator (or, for riscv64, OpenSBI)
//! is missing and the runner is root on Debian, it installs the packages with apt-get, saying
//! so on stderr. Elsewhere it stops with a message naming the packages. Debian 12 machines
//! here carry a backported `qemu-utils` that `Breaks: qemu-system-common (< 8.0)`, which makes
//! a plain install fail; the second attempt removes `qemu-utils` (apt's `qemu-utils-` syntax).
//!
//! Every machine runs under single-threaded TCG (`-accel tcg,thread=single`: multi-threaded
//! TCG on two host cores makes polled I/O slow), without display or monitor, with the serial
//! port on QEMU's stdout.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::arch::Arch;
use crate::debian;
use crate::image::OPENSBI_FW_DYNAMIC;

/// Why QEMU is not available.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QemuSetupError {
    #[error(
        "{missing} missing; install the Debian package(s) {packages} \
         (`apt-get install {packages}`) or run the runner as root on Debian to have it done"
    )]
    CannotInstall { missing: String, packages: String },
    #[error("`{command}` failed ({status})")]
    AptFailed { command: String, status: String },
    #[error("{missing} still missing after installing {packages}")]
    StillMissing { missing: String, packages: String },
}

/// Makes sure QEMU for `arch` can run, installing it if needed and possible. Checked once per
/// architecture and process; concurrent callers never run apt-get twice.
pub fn ensure_qemu(arch: Arch) -> Result<(), QemuSetupError> {
    static CHECKED: [OnceLock<Result<(), QemuSetupError>>; 2] = [OnceLock::new(), OnceLock::new()];
    CHECKED[arch.index()].get_or_init(|| set_up(arch)).clone()
}

fn set_up(arch: Arch) -> Result<(), QemuSetupError> {
    // One apt-get at a time in this process, whichever program asks; the check comes after
    // the lock, so a thread that waited sees what the other one installed.
    let _apt = debian::apt_lock();

    let missing = missing_parts(arch);
    if missing.is_empty() {
        return Ok(());
    }
    let packages = arch.debian_packages().join(" ");
    let missing = missing.join(" and ");
    if !debian::may_install_packages() {
        return Err(QemuSetupError::CannotInstall { missing, packages });
    }

    eprintln!("runner: {missing} missing; installing the Debian package(s) {packages}");
    debian::apt_get(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(arch.debian_packages());
    if debian::apt_get(&install).is_err() {
        eprintln!(
            "runner: apt-get install failed; retrying while removing qemu-utils, whose newer \
             version breaks qemu-system-common (< 8.0)"
        );
        install.push("qemu-utils-");
        debian::apt_get(&install)?;
    }

    let still_missing = missing_parts(arch);
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(QemuSetupError::StillMissing {
            missing: still_missing.join(" and "),
            packages,
        })
    }
}

/// What of QEMU for `arch` is missing, as phrases for a message.
fn missing_parts(arch: Arch) -> Vec<String> {
    let mut missing = Vec::new();
    let runs = Command::new(arch.qemu_binary())
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        missing.push(arch.qemu_binary().to_owned());
    }
    if arch == Arch::Riscv64 && !Path::new(OPENSBI_FW_DYNAMIC).is_file() {
        missing.push(format!("OpenSBI ({OPENSBI_FW_DYNAMIC})"));
    }
    missing
}

impl From<debian::AptError> for QemuSetupError {
    fn from(error: debian::AptError) -> Self {
        QemuSetupError::AptFailed {
            command: error.command,
            status: error.status,
        }
    }
}

/// The firmware QEMU starts before the kernel (riscv64 only; x86_64 always uses SeaBIOS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's own (`-bios default`: OpenSBI on riscv64).
    Default,
    /// A firmware file, e.g. OpenSBI padded to move the kernel.
    File(PathBuf),
}

/// How a disk image is attached to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum DiskBus {
    /// virtio-blk over a virtio-mmio slot of riscv64 `virt` (QEMU's default legacy transport).
    Mmio,
    /// virtio-blk over virtio-mmio, the modern (version 2) transport
    /// (`-global virtio-mmio.force-legacy=false`).
    MmioModern,
    /// virtio-blk on PCI (`virtio-blk-pci`).
    Pci,
}

impl DiskBus {
    /// The bus a disk goes on when none is asked for: MMIO on riscv64, PCI on x86_64 (q35
    /// has no virtio-mmio slots).
    pub fn default_for(arch: Arch) -> Self {
        match arch {
            Arch::Riscv64 => Self::Mmio,
            Arch::X86_64 => Self::Pci,
        }
    }

    /// Whether `arch`'s machine has this bus.
    pub fn exists_on(self, arch: Arch) -> bool {
        self == Self::Pci || arch == Arch::Riscv64
    }
}

/// A disk image file the guest sees as a read-only virtio-blk device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskImage {
    /// The raw image file.
    pub path: PathBuf,
    /// How it is attached.
    pub bus: DiskBus,
    /// A `blkdebug` rules file: QEMU injects the errors it describes into reads of the image.
    pub blkdebug_config: Option<PathBuf>,
}

/// A file placed in guest RAM at a physical address, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInMemory {
    /// The file.
    pub path: PathBuf,
    /// The guest physical address of its first byte.
    pub address: u64,
}

/// The machine to boot: everything but the architecture and the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The kernel command line (`-append`); empty for none.
    pub command_line: String,
    /// Number of CPUs.
    pub smp: u32,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// Disk images, attached in order (the guest names them `virtio0`, `virtio1`, ...).
    pub disks: Vec<DiskImage>,
    /// A file loaded as the initrd (`-initrd`).
    pub initrd: Option<PathBuf>,
    /// Files QEMU's generic loader copies into guest RAM as they are, before the firmware
    /// runs (`-device loader`).
    pub files_in_memory: Vec<FileInMemory>,
    /// Extra arguments appended to QEMU's command line as they are.
    pub extra_args: Vec<OsString>,
}

/// QEMU's arguments (without the program) to boot `kernel` on `arch`.
pub fn qemu_args(
    arch: Arch,
    kernel: &Path,
    firmware: &Firmware,
    machine: &Machine,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));

    match arch {
        Arch::Riscv64 => push(&["-M", "virt"]),
        Arch::X86_64 => push(&[
            "-M",
            "q35",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-no-reboot",
        ]),
    }
    let smp = machine.smp.to_string();
    let memory = format!("{}M", machine.memory_mib);
    push(&[
        "-smp",
        &smp,
        "-m",
        &memory,
        "-accel",
        "tcg,thread=single",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        // No network card: nothing uses one yet, and its option ROM (ipxe-qemu) need not
        // be installed.
        "-nic",
        "none",
    ]);

    match firmware {
        Firmware::Default if arch == Arch::Riscv64 => push(&["-bios", "default"]),
        Firmware::Default => {}
        Firmware::File(path) => {
            args.push("-bios".into());
            args.push(path.into());
        }
    }
    args.push("-kernel".into());
    args.push(kernel.into());
    if !machine.command_line.is_empty() {
        args.push("-append".into());
        args.push(machine.command_line.clone().into());
    }
    if let Some(initrd) = &machine.initrd {
        args.push("-initrd".into());
        args.push(initrd.into());
    }
    if machine
        .disks
        .iter()
        .any(|disk| disk.bus == DiskBus::MmioModern)
    {
        args.push("-global".into());
        args.push("virtio-mmio.force-legacy=false".into());
    }
    for (index, disk) in machine.disks.iter().enumerate() {
        args.push("-drive".into());
        args.push(drive_option(index, disk));
        let device = match disk.bus {
            DiskBus::Mmio | DiskBus::MmioModern => "virtio-blk-device",
            DiskBus::Pci => "virtio-blk-pci",
        };
        args.push("-device".into());
        args.push(format!("{device},drive=disk{index}").into());
    }
    for file in &machine.files_in_memory {
        // `force-raw`: an ELF or uImage is copied as it is, not loaded as a program.
        let mut option = OsString::from("loader,file=");
        option.push(escape_option_value(file.path.as_os_str()));
        option.push(format!(",addr={:#x},force-raw=on", file.address));
        args.push("-device".into());
        args.push(option);
    }
    args.extend(machine.extra_args.iter().cloned());
    args
}

/// The `-drive` option of disk number `index`: a read-only raw image, behind `blkdebug` when
/// errors are to be injected.
fn drive_option(index: usize, disk: &DiskImage) -> OsString {
    let mut option = OsString::from(format!("if=none,id=disk{index},format=raw,readonly=on,"));
    match &disk.blkdebug_config {
        None => {
            option.push("file=");
            option.push(escape_option_value(disk.path.as_os_str()));
        }
        Some(config) => {
            option.push("file.driver=blkdebug,file.config=");
            option.push(escape_option_value(config.as_os_str()));
            option.push(",file.image.filename=");
            option.push(escape_option_value(disk.path.as_os_str()));
        }
    }
    option
}

/// A value for a QEMU `key=value,...` option: commas doubled, as QEMU's option parser wants.
fn escape_option_value(value: &std::ffi::OsStr) -> OsString {
    use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};

    let mut escaped = Vec::with_capacity(value.len());
    for &byte in value.as_bytes() {
        escaped.push(byte);
        if byte == b',' {
            escaped.push(b',');
        }
    }
    OsString::from_vec(escaped)
}

/// A command line for a person to read (and paste into a shell).
pub fn display_command(program: &str, args: &[OsString]) -> String {
    let mut text = program.to_owned();
    for arg in args {
        let arg = arg.to_string_lossy();
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,./:+@".contains(c));
        if plain {
            let _ = write!(text, " {arg}");
        } else {
            let _ = write!(text, " '{}'", arg.replace('\'', r"'\''"));
        }
    }
    text
}

pub(crate) mod process {
    //! Starting QEMU so that it can be killed cleanly, and learning that it exited without
    //! reaping it.
    //!
    //! QEMU gets its own process group, so a Ctrl-C at the terminal reaches only the runner,
    //! which then kills QEMU itself; and a parent-death signal, so QEMU dies with the runner
    //! if the runner is killed outright. The runner learns of QEMU's exit from
    //! `waitid(WNOWAIT)` on a waiter thread, which leaves the zombie in place: until the
    //! runner reaps it with [`std::process::Child::wait`], QEMU's pid cannot be reused, so
    //! killing it is never a kill of some other process.

    use std::io;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command};

    use rustix::io::Errno;
    use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

    /// Starts `command` in a process group of its own, to be killed when the calling thread
    /// exits.
    pub fn spawn_in_own_process_group(command: &mut Command) -> io::Result<Child> {
        command.process_group(0);
        // SAFETY: the closure runs in the forked child before exec; it makes one system call
        // (prctl), allocates nothing and takes no lock, so it is async-signal-safe as
        // `pre_exec` requires.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(io::Error::from)
            });
        }
        command.spawn()
    }

    /// Blocks until the process `pid` has exited, leaving it to be reaped by the caller.
    pub fn wait_for_exit_without_reaping(pid: Pid) -> io::Result<()> {
        loop {
            match rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(command_line: &str) -> Machine {
        Machine {
            command_line: command_line.into(),
            smp: 4,
            memory_mib: 512,
            disks: Vec::new(),
            initrd: None,
            files_in_memory: Vec::new(),
            extra_args: vec!["-S".into()],
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    /// Whether `needle` occurs in `args` as consecutive arguments.
    fn has(args: &[String], needle: &[&str]) -> bool {
        args.windows(needle.len()).any(|window| window == needle)
    }

    #[test]
    fn riscv64_boots_virt_under_opensbi() {
        let args = strings(&qemu_args(
            Arch::Riscv64,
            Path::new("/k/kernel"),
            &Firmware::Default,
            &machine("test"),
        ));
        for needle in [
            &["-M", "virt"][..],
            &["-bios", "default"],
            &["-kernel", "/k/kernel"],
            &["-append", "test"],
            &["-smp", "4"],
            &["-m", "512M"],
            &["-accel", "tcg,thread=single"],
            &["-display", "none"],
            &["-monitor", "none"],
            &["-serial", "stdio"],
        ] {
            assert!(has(&args, needle), "{needle:?} not in {args:?}");
        }
        assert_eq!(
            args.last().map(String::as_str),
            Some("-S"),
            "extra args come last"
        );
    }

    #[test]
    fn x86_64_boots_q35_with_exit_device() {
        let args = strings(&qemu_args(
            Arch::X86_64,
            Path::new("/k/kernel"),
            &Firmware::Default,
            &machine(""),
        ));
        for needle in [
            &["-M", "q35"][..],
            &["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
            &["-no-reboot"],
            &["-kernel", "/k/kernel"],
        ] {
            assert!(has(&args, needle), "{needle:?} not in {args:?}");
        }
        assert!(!args.iter().any(|arg| arg == "-bios"), "{args:?}");
        assert!(
            !args.iter().any(|arg| arg == "-append"),
            "empty command line: {args:?}"
        );
    }

    #[test]
    fn firmware_file_replaces_default() {
        let args = strings(&qemu_args(
            Arch::Riscv64,
            Path::new("/k/kernel.bin"),
            &Firmware::File("/t/fw.bin".into()),
            &machine(""),
        ));
        assert!(has(&args, &["-bios", "/t/fw.bin"]), "{args:?}");
        assert!(!has(&args, &["-bios", "default"]), "{args:?}");
    }

    #[test]
    fn disks_and_initrd_become_drives_devices_and_initrd() {
        let mut with_disks = machine("");
        with_disks.initrd = Some("/tmp/root.img".into());
        with_disks.disks = vec![
            DiskImage {
                path: "/tmp/a,b.img".into(),
                bus: DiskBus::MmioModern,
                blkdebug_config: None,
            },
            DiskImage {
                path: "/tmp/c.img".into(),
                bus: DiskBus::Pci,
                blkdebug_config: Some("/tmp/eio.conf".into()),
            },
        ];
        let args = strings(&qemu_args(
            Arch::Riscv64,
            Path::new("/k"),
            &Firmware::Default,
            &with_disks,
        ));

        assert!(has(&args, &["-initrd", "/tmp/root.img"]));
        assert!(has(&args, &["-global", "virtio-mmio.force-legacy=false"]));
        assert!(has(
            &args,
            &[
                "-drive",
                "if=none,id=disk0,format=raw,readonly=on,file=/tmp/a,,b.img",
                "-device",
                "virtio-blk-device,drive=disk0",
            ]
        ));
        assert!(has(
            &args,
            &[
                "-drive",
                "if=none,id=disk1,format=raw,readonly=on,file.driver=blkdebug,\
                 file.config=/tmp/eio.conf,file.image.filename=/tmp/c.img",
                "-device",
                "virtio-blk-pci,drive=disk1",
            ]
        ));
        assert!(!DiskBus::Mmio.exists_on(Arch::X86_64));
        assert_eq!(DiskBus::default_for(Arch::X86_64), DiskBus::Pci);
    }

    #[test]
    fn files_in_memory_become_raw_loader_devices() {
        let mut with_files = machine("");
        with_files.files_in_memory = vec![FileInMemory {
            path: "/t/kernel,1.bin".into(),
            address: 0x8400_0000,
        }];
        let args = strings(&qemu_args(
            Arch::Riscv64,
            Path::new("/k"),
            &Firmware::Default,
            &with_files,
        ));
        assert!(has(
            &args,
            &[
                "-device",
                "loader,file=/t/kernel,,1.bin,addr=0x84000000,force-raw=on"
            ]
        ));
    }

    #[test]
    fn displayed_command_quotes_what_a_shell_would_split() {
        let args: Vec<OsString> = ["-append", "test fault=read", "-m", "256M", "it's"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            display_command("qemu", &args),
            r"qemu -append 'test fault=read' -m 256M 'it'\''s'"
        );
    }
}
