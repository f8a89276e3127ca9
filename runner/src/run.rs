//! One run of the kernel in QEMU: start it, decode its log as it comes, stop it when it exits,
//! times out or Ctrl-C is pressed, and report how it ended.
//!
//! Three threads feed one channel: a reader of QEMU's stdout (the serial port), a reader of
//! its stderr, and a waiter that learns when QEMU exits; the Ctrl-C handler
//! ([`crate::interrupt`]) sends to the same channel. The calling thread decodes and prints
//! while it waits on the channel with `recv_timeout` up to the deadline, so nothing polls or
//! sleeps. After QEMU exits the readers drain what it wrote, for at most [`DRAIN_TIME`].
//!
//! Booted through U-Boot ([`BootLoader::UBoot`]), QEMU's stdin (the serial port's input) is a
//! pipe: the supervising thread shows U-Boot's console text to a [`ConsoleScript`] as it
//! arrives and types what the script says, until the kernel starts.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::decode::{KernelSymbols, LogLine, SerialDecoder, SerialItem, SymbolsError};
use crate::image::{self, ImageError};
use crate::interrupt;
use crate::kernel_build::{runner_output_dir, workspace_root};
use crate::outcome::{Outcome, QemuExit, QemuFailure, classify_exit};
use crate::qemu::{self, DiskImage, FileInMemory, Firmware, Machine, QemuSetupError, process};
use crate::uboot::{self, ConsoleAction, ConsoleScript, UBootError};

/// How long to keep reading QEMU's output after it exited or was killed.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How the kernel is handed to QEMU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageFormat {
    /// The ELF, loaded at its physical addresses (0x80200000 on riscv64).
    #[default]
    Elf,
    /// riscv64 only: the flat binary image behind OpenSBI padded to 2600 KiB, which QEMU
    /// loads at 0x80400000 (see [`crate::image`]).
    FlatAtSecondAddress,
}

/// What starts the kernel after the firmware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum BootLoader {
    /// None: QEMU loads the kernel and the firmware (OpenSBI, SeaBIOS) jumps to it.
    #[default]
    Direct,
    /// riscv64 only: U-Boot (S-mode, under OpenSBI) boots the flat image with `booti`, as
    /// on a VisionFive 2 (see [`crate::uboot`]).
    #[value(name = "u-boot")]
    UBoot,
}

/// Printing the run as it happens, for a person at a terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Echo {
    /// Colour the log levels.
    pub color: bool,
    /// Also print the QEMU command line and the firmware's text.
    pub verbose: bool,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The machine.
    pub arch: Arch,
    /// The kernel ELF (also the source of the defmt table).
    pub kernel: PathBuf,
    /// How the kernel is handed to QEMU.
    pub image_format: ImageFormat,
    /// What starts the kernel after the firmware.
    pub boot_loader: BootLoader,
    /// The kernel command line.
    pub command_line: String,
    /// Number of CPUs.
    pub smp: u32,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// How long the kernel may run before QEMU is killed.
    pub timeout: Duration,
    /// Disk images the guest sees as virtio-blk devices, in order.
    pub disks: Vec<DiskImage>,
    /// A file QEMU loads as the initrd.
    pub initrd: Option<PathBuf>,
    /// Extra arguments for QEMU, appended as they are.
    pub extra_qemu_args: Vec<OsString>,
    /// Print the log as it arrives (`None`: only collect it into the report).
    pub echo: Option<Echo>,
}

impl RunConfig {
    /// Default settings: the ELF, an empty command line, 1 CPU, 256 MiB, 60 s, no printing.
    pub fn new(arch: Arch, kernel: PathBuf) -> Self {
        Self {
            arch,
            kernel,
            image_format: ImageFormat::Elf,
            boot_loader: BootLoader::Direct,
            command_line: String::new(),
            smp: 1,
            memory_mib: 256,
            timeout: Duration::from_secs(60),
            disks: Vec::new(),
            initrd: None,
            extra_qemu_args: Vec::new(),
            echo: None,
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Every decoded log line, in order.
    pub lines: Vec<LogLine>,
    /// The firmware's text before the kernel started.
    pub firmware_lines: Vec<String>,
    /// What QEMU wrote on stderr.
    pub qemu_stderr: Vec<String>,
    /// Frames that did not decode and were skipped.
    pub malformed_frames: usize,
    /// Every byte the serial port gave, undecoded.
    pub serial_bytes: Vec<u8>,
    /// Whether the kernel's output (its first 0x00 byte) was seen.
    pub kernel_started: bool,
    /// From starting QEMU until it exited (or was killed).
    pub wall_time: Duration,
    /// The QEMU command line.
    pub qemu_command: String,
}

impl RunReport {
    /// The messages of all decoded lines.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|line| line.message.as_str())
    }

    /// The whole run as text, for a failing test to show: firmware, log, QEMU's stderr.
    pub fn transcript(&self) -> String {
        let mut text = format!("$ {}\n", self.qemu_command);
        for line in &self.firmware_lines {
            text.push_str(&format!("firmware| {line}\n"));
        }
        for line in &self.lines {
            text.push_str(&line.render(false));
            text.push('\n');
        }
        for line in &self.qemu_stderr {
            text.push_str(&format!("qemu stderr| {line}\n"));
        }
        text.push_str(&format!(
            "{} ({:.3} s, {} malformed frames)\n",
            self.outcome,
            self.wall_time.as_secs_f64(),
            self.malformed_frames
        ));
        text
    }
}

/// Why a run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("reading the kernel ELF {path}: {source}")]
    ReadKernel { path: PathBuf, source: io::Error },
    #[error("the kernel ELF {path} cannot decode the log: {source}")]
    Symbols { path: PathBuf, source: SymbolsError },
    #[error("making the kernel image: {0}")]
    Image(#[from] ImageError),
    #[error("a flat kernel image boots only on riscv64, not on {0}")]
    FlatImageUnsupported(Arch),
    #[error("booting through U-Boot works only on riscv64, not on {0}")]
    BootLoaderUnsupported(Arch),
    #[error("U-Boot boots the flat image at its own address; it cannot take --flat-image too")]
    FlatImageWithBootLoader,
    #[error("reading the size of the initrd {path}: {source}")]
    InitrdUnreadable { path: PathBuf, source: io::Error },
    #[error(transparent)]
    UBoot(#[from] UBootError),
    #[error("{arch} has no {bus:?} bus for disks (riscv64 has MMIO and PCI, x86_64 only PCI)")]
    DiskBusUnsupported { bus: qemu::DiskBus, arch: Arch },
    #[error(transparent)]
    QemuSetup(#[from] QemuSetupError),
}

/// Boots the kernel as `config` says and reports how the run went.
pub fn run(config: &RunConfig) -> Result<RunReport, RunError> {
    let elf = fs::read(&config.kernel).map_err(|source| RunError::ReadKernel {
        path: config.kernel.clone(),
        source,
    })?;
    let symbols = KernelSymbols::from_elf(&elf).map_err(|source| RunError::Symbols {
        path: config.kernel.clone(),
        source,
    })?;
    if !symbols.has_locations() && config.echo.is_some() {
        eprintln!("runner: the kernel ELF has no debug information; no source locations");
    }

    if let Some(disk) = config
        .disks
        .iter()
        .find(|disk| !disk.bus.exists_on(config.arch))
    {
        return Err(RunError::DiskBusUnsupported {
            bus: disk.bus,
            arch: config.arch,
        });
    }
    qemu::ensure_qemu(config.arch)?;
    let mut plan = match config.boot_loader {
        BootLoader::Direct => {
            let (kernel, firmware) = prepare_image(config, &elf)?;
            BootPlan {
                kernel,
                firmware,
                command_line: config.command_line.clone(),
                initrd: config.initrd.clone(),
                files_in_memory: Vec::new(),
                console_script: None,
                run_files: Vec::new(),
            }
        }
        BootLoader::UBoot => prepare_u_boot(config, &elf)?,
    };
    let machine = Machine {
        command_line: plan.command_line.clone(),
        smp: config.smp,
        memory_mib: config.memory_mib,
        disks: config.disks.clone(),
        initrd: plan.initrd.clone(),
        files_in_memory: plan.files_in_memory.clone(),
        extra_args: config.extra_qemu_args.clone(),
    };
    let args = qemu::qemu_args(config.arch, &plan.kernel, &plan.firmware, &machine);
    let qemu_command = qemu::display_command(config.arch.qemu_binary(), &args);
    if config.echo.is_some_and(|echo| echo.verbose) {
        eprintln!("runner: {qemu_command}");
    }

    let root = workspace_root();
    let decoder = symbols.decoder(&root);
    let mut supervisor = Supervisor {
        config,
        decoder,
        console: plan.console_script.take().map(|script| Console {
            script,
            keyboard: None,
        }),
        report: RunReport {
            // Replaced by the outcome `run_to_end` returns.
            outcome: Outcome::Interrupted,
            lines: Vec::new(),
            firmware_lines: Vec::new(),
            qemu_stderr: Vec::new(),
            malformed_frames: 0,
            serial_bytes: Vec::new(),
            kernel_started: false,
            wall_time: Duration::ZERO,
            qemu_command,
        },
    };
    let mut command = Command::new(config.arch.qemu_binary());
    command.args(&args);
    supervisor.report.outcome = supervisor.run_to_end(command);
    for path in &plan.run_files {
        // QEMU read it at start-up; a file left behind only takes space.
        let _ = fs::remove_file(path);
    }
    Ok(supervisor.report)
}

/// How QEMU is to start the kernel.
struct BootPlan {
    /// QEMU's `-kernel`: the kernel, or the boot loader.
    kernel: PathBuf,
    /// The firmware.
    firmware: Firmware,
    /// QEMU's `-append` (empty when the boot loader passes the command line).
    command_line: String,
    /// QEMU's `-initrd`.
    initrd: Option<PathBuf>,
    /// Files placed in guest RAM for the boot loader.
    files_in_memory: Vec<FileInMemory>,
    /// What to type at the boot loader's console.
    console_script: Option<ConsoleScript>,
    /// Files written for this run only, removed after it.
    run_files: Vec<PathBuf>,
}

/// Plans the boot through U-Boot: U-Boot as QEMU's `-kernel`, the flat image and the initrd
/// in RAM where `booti` takes them, and the `booti` command to type.
fn prepare_u_boot(config: &RunConfig, elf: &[u8]) -> Result<BootPlan, RunError> {
    if config.arch != Arch::Riscv64 {
        return Err(RunError::BootLoaderUnsupported(config.arch));
    }
    if config.image_format != ImageFormat::Elf {
        return Err(RunError::FlatImageWithBootLoader);
    }
    uboot::ensure_u_boot()?;

    let flat = image::flat_image(elf)?;
    uboot::check_fits(
        "kernel image",
        uboot::KERNEL_ADDRESS,
        flat.bytes.len() as u64,
        uboot::INITRD_ADDRESS,
        config.memory_mib,
    )?;
    let initrd_size = match &config.initrd {
        Some(path) => {
            let size = fs::metadata(path)
                .map_err(|source| RunError::InitrdUnreadable {
                    path: path.clone(),
                    source,
                })?
                .len();
            uboot::check_fits(
                "initrd",
                uboot::INITRD_ADDRESS,
                size,
                u64::MAX,
                config.memory_mib,
            )?;
            Some(size)
        }
        None => None,
    };
    let command = uboot::booti_command(&config.command_line, initrd_size)?;

    // One file per run: tests boot different kernels through U-Boot at the same time.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let kernel = runner_output_dir()
        .join(config.arch.target_triple())
        .join(format!(
            "u-boot-kernel-{}-{}.bin",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
    image::write_atomically(&kernel, &flat.bytes)?;
    let mut files_in_memory = vec![FileInMemory {
        path: kernel.clone(),
        address: uboot::KERNEL_ADDRESS,
    }];
    if let Some(path) = &config.initrd {
        files_in_memory.push(FileInMemory {
            path: path.clone(),
            address: uboot::INITRD_ADDRESS,
        });
    }
    if config.echo.is_some_and(|echo| echo.verbose) {
        eprintln!(
            "runner: U-Boot {} boots the flat image ({} bytes) placed at {:#x} with: {command}",
            uboot::U_BOOT_QEMU_SMODE,
            flat.bytes.len(),
            uboot::KERNEL_ADDRESS
        );
    }

    Ok(BootPlan {
        kernel: uboot::U_BOOT_QEMU_SMODE.into(),
        firmware: Firmware::Default,
        command_line: String::new(),
        initrd: None,
        files_in_memory,
        console_script: Some(ConsoleScript::new(command)),
        run_files: vec![kernel],
    })
}

/// Writes the files QEMU needs for `config.image_format`; returns the `-kernel` file and the
/// firmware.
fn prepare_image(config: &RunConfig, elf: &[u8]) -> Result<(PathBuf, Firmware), RunError> {
    match config.image_format {
        ImageFormat::Elf => Ok((config.kernel.clone(), Firmware::Default)),
        ImageFormat::FlatAtSecondAddress if config.arch != Arch::Riscv64 => {
            Err(RunError::FlatImageUnsupported(config.arch))
        }
        ImageFormat::FlatAtSecondAddress => {
            let flat = image::flat_image(elf)?;
            let directory = runner_output_dir().join(config.arch.target_triple());
            let path = directory.join("kernel.bin");
            image::write_atomically(&path, &flat.bytes)?;
            let firmware = image::write_padded_opensbi(&directory)?;
            if config.echo.is_some_and(|echo| echo.verbose) {
                eprintln!(
                    "runner: flat image {} ({} bytes, linked for {:#x}) behind {}",
                    path.display(),
                    flat.bytes.len(),
                    flat.link_address,
                    firmware.display()
                );
            }
            Ok((path, Firmware::File(firmware)))
        }
    }
}

/// What the threads watching QEMU tell the supervising thread.
pub(crate) enum Event {
    /// Bytes from the serial port.
    Serial(Vec<u8>),
    /// The serial port's pipe closed.
    SerialClosed,
    /// A line QEMU wrote on stderr.
    StderrLine(String),
    /// QEMU's stderr closed.
    StderrClosed,
    /// QEMU exited (not yet reaped).
    Exited,
    /// Ctrl-C.
    Interrupted,
}

/// The supervising side of one run.
struct Supervisor<'a> {
    config: &'a RunConfig,
    decoder: SerialDecoder<'a>,
    /// The boot loader's console, when something is to be typed at it.
    console: Option<Console>,
    report: RunReport,
}

/// A script typing at the boot loader's console through QEMU's stdin.
struct Console {
    script: ConsoleScript,
    /// QEMU's stdin, once QEMU runs.
    keyboard: Option<ChildStdin>,
}

impl Supervisor<'_> {
    /// Runs `command` (QEMU) to its end, filling in the report; returns the outcome.
    fn run_to_end(&mut self, mut command: Command) -> Outcome {
        let (events, receiver) = mpsc::channel();
        let _ctrl_c = interrupt::register(events.clone());

        let stdin = if self.console.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = match process::spawn_in_own_process_group(&mut command) {
            Ok(child) => child,
            Err(error) => {
                return Outcome::QemuFailed(QemuFailure::SpawnFailed(format!(
                    "{}: {error}",
                    self.config.arch.qemu_binary()
                )));
            }
        };
        if let Some(console) = &mut self.console {
            console.keyboard = child.stdin.take();
        }
        start_watchers(&mut child, events);

        let deadline = started + self.config.timeout;
        let mut serial_open = true;
        let mut stderr_open = true;
        let mut exited_at = None;
        let mut stopped_by_runner = None;
        let mut drain_deadline = None;
        while exited_at.is_none() || serial_open || stderr_open {
            let limit = drain_deadline.unwrap_or(deadline);
            let event = receiver.recv_timeout(limit.saturating_duration_since(Instant::now()));
            match event {
                Ok(Event::Serial(bytes)) => {
                    let failure = self.serial(&bytes);
                    if let Some(failure) = failure
                        && exited_at.is_none()
                        && stopped_by_runner.is_none()
                    {
                        let _ = child.kill();
                        stopped_by_runner = Some(Outcome::QemuFailed(failure));
                        drain_deadline = Some(Instant::now() + DRAIN_TIME);
                    }
                }
                Ok(Event::SerialClosed) => serial_open = false,
                Ok(Event::StderrLine(line)) => self.stderr_line(line),
                Ok(Event::StderrClosed) => stderr_open = false,
                Ok(Event::Exited) => {
                    let now = Instant::now();
                    exited_at = Some(now);
                    drain_deadline.get_or_insert(now + DRAIN_TIME);
                }
                Ok(Event::Interrupted) => {
                    if exited_at.is_none() && stopped_by_runner.is_none() {
                        let _ = child.kill();
                        stopped_by_runner = Some(Outcome::Interrupted);
                        drain_deadline = Some(Instant::now() + DRAIN_TIME);
                    }
                }
                Err(RecvTimeoutError::Timeout) if drain_deadline.is_none() => {
                    let _ = child.kill();
                    stopped_by_runner = Some(Outcome::Timeout(self.config.timeout));
                    drain_deadline = Some(Instant::now() + DRAIN_TIME);
                }
                // Done draining, or every sender is gone.
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }

        let status = child.wait();
        let end = exited_at.unwrap_or_else(Instant::now);
        self.report.wall_time = end.duration_since(started);
        for item in self.decoder.finish() {
            self.serial_item(item);
        }
        self.report.kernel_started = self.decoder.kernel_started();
        match (stopped_by_runner, status) {
            (Some(outcome), _) => outcome,
            (None, Ok(status)) => {
                let exit = match (status.code(), status.signal()) {
                    (Some(code), _) => QemuExit::Status(code),
                    (None, Some(signal)) => QemuExit::Signal(signal),
                    (None, None) => QemuExit::Status(-1),
                };
                classify_exit(self.config.arch, exit, self.report.kernel_started)
            }
            (None, Err(error)) => Outcome::QemuFailed(QemuFailure::Lost(error.to_string())),
        }
    }

    /// Takes bytes from the serial port; returns why the run must stop, if the boot loader
    /// failed.
    fn serial(&mut self, bytes: &[u8]) -> Option<QemuFailure> {
        self.report.serial_bytes.extend_from_slice(bytes);
        let firmware_text = if self.decoder.kernel_started() {
            &[][..]
        } else {
            bytes.split(|&byte| byte == 0).next().unwrap_or_default()
        };
        for item in self.decoder.push(bytes) {
            self.serial_item(item);
        }
        self.console_text(firmware_text)
    }

    /// Shows firmware text to the console script and types what it asks for.
    fn console_text(&mut self, text: &[u8]) -> Option<QemuFailure> {
        let console = self.console.as_mut()?;
        match console.script.read(text)? {
            ConsoleAction::Type(keys) => {
                // A failed write means QEMU is gone; its exit is reported on its own.
                if let Some(keyboard) = &mut console.keyboard {
                    let _ = keyboard.write_all(&keys).and_then(|()| keyboard.flush());
                }
                None
            }
            ConsoleAction::BootFailed(reason) => Some(QemuFailure::BootLoaderFailed(reason)),
        }
    }

    fn serial_item(&mut self, item: SerialItem) {
        let echo = self.config.echo;
        match item {
            SerialItem::FirmwareLine(line) => {
                if echo.is_some_and(|echo| echo.verbose) {
                    println!("firmware| {line}");
                }
                self.report.firmware_lines.push(line);
            }
            SerialItem::KernelStarted => {}
            SerialItem::Log(line) => {
                if let Some(echo) = echo {
                    println!("{}", line.render(echo.color));
                }
                self.report.lines.push(line);
            }
            SerialItem::MalformedFrame => {
                if echo.is_some() {
                    eprintln!("runner: skipped a defmt frame that did not decode");
                }
                self.report.malformed_frames += 1;
            }
        }
    }

    fn stderr_line(&mut self, line: String) {
        if self.config.echo.is_some() {
            eprintln!("{line}");
        }
        self.report.qemu_stderr.push(line);
    }
}

/// Starts the threads that report QEMU's stdout, its stderr and its exit on `events`.
fn start_watchers(child: &mut Child, events: Sender<Event>) {
    if let Some(stdout) = child.stdout.take() {
        let events = events.clone();
        thread::spawn(move || forward_serial(stdout, events));
    }
    if let Some(stderr) = child.stderr.take() {
        let events = events.clone();
        thread::spawn(move || forward_stderr(stderr, events));
    }
    let pid = rustix::process::Pid::from_child(child);
    thread::spawn(move || {
        // An error means the child is gone already; either way the supervisor reaps it.
        let _ = process::wait_for_exit_without_reaping(pid);
        let _ = events.send(Event::Exited);
    });
}

/// Sends what QEMU writes to the serial port, chunk by chunk, until the pipe closes.
fn forward_serial(mut serial: impl io::Read, events: Sender<Event>) {
    let mut buffer = [0; 4096];
    loop {
        match serial.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => {
                if events
                    .send(Event::Serial(buffer[..count].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = events.send(Event::SerialClosed);
}

/// Sends QEMU's stderr line by line until the pipe closes.
fn forward_stderr(stderr: impl io::Read, events: Sender<Event>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                if events.send(Event::StderrLine(text)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = events.send(Event::StderrClosed);
}
