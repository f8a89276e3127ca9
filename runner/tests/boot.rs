//! Boots the kernel in QEMU on both architectures and checks, line by line, what it logs and
//! how each run ends: the in-kernel tests, the boot log, a panic, a fault, a second load
//! address, several CPUs, a timeout and a QEMU that cannot start.
//!
//! Every boot waits on QEMU with a deadline (the run's timeout); nothing sleeps. The kernel is
//! built once per architecture for the whole test binary.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{check, check_boot_log, check_every_kernel_test_passes, message_starting};
use runner::image::flat_image;
use runner::kernel_build::workspace_root;
use runner::{
    Arch, ImageFormat, Level, LogLevel, Outcome, QemuFailure, RunConfig, RunReport, RunnerStatus,
    SerialItem,
};

/// The address `fault=read` reads (kernel/src/fault_tests.rs).
const UNMAPPED_ADDRESS: &str = "0xdead0000";

/// The kernel ELF for `arch`, built on first use.
fn kernel(arch: Arch) -> PathBuf {
    runner::build_kernel(arch, LogLevel::Info)
        .unwrap_or_else(|error| panic!("building the {arch} kernel: {error}"))
}

/// Boots `arch` with `command_line`, after `configure` adjusted the defaults.
fn boot_with(arch: Arch, command_line: &str, configure: impl FnOnce(&mut RunConfig)) -> RunReport {
    let mut config = RunConfig::new(arch, kernel(arch));
    config.command_line = command_line.to_owned();
    configure(&mut config);
    runner::run(&config).unwrap_or_else(|error| panic!("running the {arch} kernel: {error}"))
}

fn boot(arch: Arch, command_line: &str) -> RunReport {
    boot_with(arch, command_line, |_| {})
}

/// The boot with `test` on the command line, shared by the tests that inspect it.
fn test_boot(arch: Arch) -> &'static RunReport {
    static BOOTS: [OnceLock<RunReport>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = match arch {
        Arch::Riscv64 => &BOOTS[0],
        Arch::X86_64 => &BOOTS[1],
    };
    slot.get_or_init(|| boot(arch, "test"))
}

/// The physical address of the kernel ELF's first loadable byte.
fn elf_load_address(arch: Arch) -> u64 {
    let elf = std::fs::read(kernel(arch)).expect("the kernel ELF is readable");
    flat_image(&elf)
        .expect("the kernel ELF has loadable segments")
        .link_address
}

fn check_panic_is_reported(arch: Arch) {
    let report = boot(arch, "panic");
    check(
        &report,
        report.outcome == Outcome::KernelPanic,
        "not a panic outcome",
    );
    check(
        &report,
        report.lines.iter().any(|line| {
            line.level == Some(Level::Error)
                && line
                    .message
                    .starts_with("kernel panic at kernel/src/main.rs:")
                && line
                    .message
                    .ends_with("panic requested on the command line")
        }),
        "no decoded panic message",
    );
}

fn check_fault_is_reported(arch: Arch) {
    let report = boot(arch, "fault=read");
    check(
        &report,
        report.outcome == Outcome::KernelFault,
        "not a fault outcome",
    );
    check(
        &report,
        report.messages().any(|message| {
            message == format!("reading unmapped address {UNMAPPED_ADDRESS} on purpose")
        }),
        "the kernel did not say it reads the unmapped address",
    );
    // The trap handler's error lines name the cause (a page fault on a read) and the address.
    let error_text: String = report
        .lines
        .iter()
        .filter(|line| line.level == Some(Level::Error))
        .map(|line| line.message.to_ascii_lowercase().replace([' ', '_'], "") + "\n")
        .collect();
    for (needle, what) in [
        ("pagefault", "a page fault"),
        ("read", "a read"),
        (UNMAPPED_ADDRESS, "the unmapped address"),
    ] {
        check(
            &report,
            error_text.contains(needle),
            &format!("no error line names {what}"),
        );
    }
}

fn check_timeout_kills_qemu(arch: Arch) {
    // `-S` holds the CPU before its first instruction: the kernel cannot finish in time.
    let timeout = Duration::from_millis(300);
    let report = boot_with(arch, "", |config| {
        config.timeout = timeout;
        config.extra_qemu_args = vec!["-S".into()];
    });
    check(
        &report,
        report.outcome == Outcome::Timeout(timeout),
        "not a timeout outcome",
    );
    check(&report, !report.kernel_started, "the kernel ran despite -S");
    check(
        &report,
        report.wall_time >= timeout && report.wall_time < timeout + Duration::from_secs(10),
        "QEMU was not killed at the deadline",
    );
}

fn check_bogus_qemu_argument_is_a_qemu_failure(arch: Arch) {
    let report = boot_with(arch, "test", |config| {
        config.extra_qemu_args = vec!["-no-such-option".into()];
    });
    check(
        &report,
        matches!(
            report.outcome,
            Outcome::QemuFailed(QemuFailure::ExitedBeforeKernel(_))
        ),
        "not a QEMU failure",
    );
    check(
        &report,
        report
            .qemu_stderr
            .iter()
            .any(|line| line.contains("no-such-option")),
        "QEMU's complaint is not in the report",
    );
}

#[test]
fn riscv64_every_kernel_test_passes() {
    check_every_kernel_test_passes(Arch::Riscv64, test_boot(Arch::Riscv64));
}

#[test]
fn x86_64_every_kernel_test_passes() {
    check_every_kernel_test_passes(Arch::X86_64, test_boot(Arch::X86_64));
}

#[test]
fn riscv64_boot_log_describes_the_machine() {
    // QEMU's virt machine loads the ELF at the first 2 MiB boundary after OpenSBI.
    check_boot_log(Arch::Riscv64, test_boot(Arch::Riscv64), "test", 0x8020_0000);
}

#[test]
fn x86_64_boot_log_describes_the_machine() {
    // QEMU loads the PVH ELF's segments at their physical addresses.
    let load_address = elf_load_address(Arch::X86_64);
    check_boot_log(Arch::X86_64, test_boot(Arch::X86_64), "test", load_address);
}

#[test]
fn riscv64_panic_is_reported() {
    check_panic_is_reported(Arch::Riscv64);
}

#[test]
fn x86_64_panic_is_reported() {
    check_panic_is_reported(Arch::X86_64);
}

#[test]
fn riscv64_fault_is_reported() {
    check_fault_is_reported(Arch::Riscv64);
}

#[test]
fn x86_64_fault_is_reported() {
    check_fault_is_reported(Arch::X86_64);
}

#[test]
fn riscv64_flat_image_runs_at_second_load_address() {
    let report = boot_with(Arch::Riscv64, "test", |config| {
        config.image_format = ImageFormat::FlatAtSecondAddress;
    });
    check_every_kernel_test_passes(Arch::Riscv64, &report);
    check_boot_log(Arch::Riscv64, &report, "test", 0x8040_0000);
}

#[test]
fn riscv64_boots_with_four_harts() {
    let report = boot_with(Arch::Riscv64, "test", |config| config.smp = 4);
    check_every_kernel_test_passes(Arch::Riscv64, &report);
    let boot_hart = message_starting(&report, "booting on riscv64, boot cpu ")
        .and_then(|message| message.strip_prefix("booting on riscv64, boot cpu "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|hart| hart.parse::<u64>().ok());
    check(
        &report,
        boot_hart.is_some_and(|hart| hart < 4),
        "the boot hart is not one of the four",
    );
}

#[test]
fn riscv64_timeout_kills_qemu() {
    check_timeout_kills_qemu(Arch::Riscv64);
}

#[test]
fn x86_64_timeout_kills_qemu() {
    check_timeout_kills_qemu(Arch::X86_64);
}

#[test]
fn riscv64_bogus_qemu_argument_is_a_qemu_failure() {
    check_bogus_qemu_argument_is_a_qemu_failure(Arch::Riscv64);
}

#[test]
fn x86_64_bogus_qemu_argument_is_a_qemu_failure() {
    check_bogus_qemu_argument_is_a_qemu_failure(Arch::X86_64);
}

#[test]
fn corrupt_frames_are_skipped_and_decoding_resumes() {
    let report = test_boot(Arch::Riscv64);
    let elf = std::fs::read(kernel(Arch::Riscv64)).unwrap();
    let symbols = runner::KernelSymbols::from_elf(&elf).unwrap();

    // Corrupt one byte of every tenth frame (never a 0x00, so frame boundaries stay).
    let mut serial = report.serial_bytes.clone();
    let separator = serial.iter().position(|&byte| byte == 0).unwrap();
    let mut frame_number = 0;
    let mut corrupted = 0;
    let mut at_frame_start = true;
    for byte in &mut serial[separator + 1..] {
        if *byte == 0 {
            at_frame_start = true;
            continue;
        }
        if at_frame_start {
            frame_number += 1;
            if frame_number % 10 == 0 {
                *byte ^= 0x55;
                if *byte == 0 {
                    *byte = 0x55;
                }
                corrupted += 1;
            }
        }
        at_frame_start = false;
    }

    let items = symbols.decode_capture(&serial, &workspace_root());
    let decoded: Vec<_> = items
        .iter()
        .filter_map(|item| match item {
            SerialItem::Log(line) => Some(line.message.as_str()),
            _ => None,
        })
        .collect();
    let malformed = items
        .iter()
        .filter(|item| matches!(item, SerialItem::MalformedFrame))
        .count();
    // A corrupt frame is dropped or decodes to a different line; the rest decode unchanged.
    let intact = report
        .messages()
        .filter(|message| decoded.contains(message))
        .count();
    check(
        report,
        intact >= report.lines.len() - corrupted,
        &format!("only {intact} lines survived {corrupted} corrupt frames ({malformed} malformed)"),
    );
    check(
        report,
        decoded
            .iter()
            .any(|message| message.starts_with("stopping the machine")),
        "decoding did not resume up to the last line",
    );
}

#[test]
fn frames_from_another_kernel_do_not_crash_the_decoder() {
    // The riscv64 kernel's log decoded with the x86_64 kernel's table: nonsense, but no panic
    // escapes and the stream is consumed to its end.
    let report = test_boot(Arch::Riscv64);
    let elf = std::fs::read(kernel(Arch::X86_64)).unwrap();
    let symbols = runner::KernelSymbols::from_elf(&elf).unwrap();

    let items = symbols.decode_capture(&report.serial_bytes, &workspace_root());

    let frames = items
        .iter()
        .filter(|item| matches!(item, SerialItem::Log(_) | SerialItem::MalformedFrame))
        .count();
    check(
        report,
        frames == report.lines.len() + report.malformed_frames,
        &format!("{frames} frames seen with the wrong table"),
    );
    // The tables really differ: most lines come out as something else.
    let unchanged = items
        .iter()
        .filter(|item| match item {
            SerialItem::Log(line) => report.messages().any(|message| message == line.message),
            _ => false,
        })
        .count();
    check(
        report,
        unchanged < report.lines.len() / 2,
        &format!("{unchanged} lines decoded the same with the x86_64 table"),
    );
}

/// The process exit status of a runner status.
fn status_code(status: RunnerStatus) -> i32 {
    i32::from(status.code())
}

/// Runs the `runner` program with `args`; returns its exit status and stderr.
fn runner_program(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .output()
        .expect("the runner program starts");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn runner_program_exit_status_tells_how_the_kernel_ended() {
    let riscv64 = kernel(Arch::Riscv64);
    let kernel_path = riscv64.to_str().unwrap();

    let (status, stdout, stderr) = runner_program(&[
        "--kernel",
        kernel_path,
        "--append",
        "panic",
        "--timeout",
        "60",
    ]);
    assert_eq!(
        status,
        Some(status_code(RunnerStatus::KernelPanic)),
        "panic status\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("panic requested on the command line"),
        "{stdout}"
    );
    assert!(stderr.contains("kernel exited: kernel panic ("), "{stderr}");

    let (status, stdout, stderr) = runner_program(&[
        "run",
        "--kernel",
        kernel_path,
        "--timeout",
        "0.3",
        "--qemu-arg=-S",
    ]);
    assert_eq!(
        status,
        Some(status_code(RunnerStatus::Timeout)),
        "timeout status\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("timeout"), "{stderr}");

    let (status, _, stderr) = runner_program(&["--arch", "sparc"]);
    assert_eq!(
        status,
        Some(status_code(RunnerStatus::Usage)),
        "usage status\n{stderr}"
    );
}

/// The toolchain's own `rust-objcopy` (llvm-objcopy), which ships with rustc.
fn rust_objcopy() -> PathBuf {
    let output = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "sysroot", "--print", "host-tuple"])
        .current_dir(workspace_root())
        .output()
        .expect("rustc runs");
    let printed = String::from_utf8(output.stdout).unwrap();
    let mut lines = printed.lines();
    let (sysroot, host) = (lines.next().unwrap(), lines.next().unwrap());
    PathBuf::from(sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/rust-objcopy")
}

fn check_flat_image_matches_objcopy(arch: Arch) {
    let elf_path = kernel(arch);
    let elf = std::fs::read(&elf_path).unwrap();
    let image = flat_image(&elf).unwrap();

    let reference = std::env::temp_dir().join(format!(
        "runner-test-{}-{}.bin",
        arch.name(),
        std::process::id()
    ));
    let status = Command::new(rust_objcopy())
        .args(["-O", "binary"])
        .arg(&elf_path)
        .arg(&reference)
        .status()
        .expect("rust-objcopy runs");
    assert!(status.success(), "rust-objcopy failed: {status}");
    let expected = std::fs::read(&reference).unwrap();
    let _ = std::fs::remove_file(&reference);

    assert_eq!(image.bytes.len(), expected.len(), "image sizes differ");
    let first_difference = image.bytes.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the images differ");
}

#[test]
fn riscv64_flat_image_matches_objcopy() {
    check_flat_image_matches_objcopy(Arch::Riscv64);
}

#[test]
fn x86_64_flat_image_matches_objcopy() {
    check_flat_image_matches_objcopy(Arch::X86_64);
}

#[test]
fn ctrl_c_kills_qemu_and_exits_130() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;

    let riscv64 = kernel(Arch::Riscv64);
    // `-S` keeps the guest stopped, so only Ctrl-C ends the run.
    let mut runner = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "--verbose",
            "--no-disk",
            "--timeout",
            "60",
            "--qemu-arg=-S",
            "--kernel",
        ])
        .arg(&riscv64)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runner program starts");

    // The runner prints QEMU's command line just before it starts QEMU; its Ctrl-C handler is
    // in place by then.
    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr = BufReader::new(runner.stderr.take().expect("stderr is piped"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut stderr_text = String::new();
    while !stderr_text.contains("runner: qemu-system-riscv64") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines_rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("QEMU's command line never appeared:\n{stderr_text}"));
        stderr_text.push_str(&line);
        stderr_text.push('\n');
    }

    let pid = rustix::process::Pid::from_child(&runner);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT is sent");

    // Collect the rest of stderr; the channel closes when the runner exits.
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                stderr_text.push_str(&line);
                stderr_text.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = runner.kill();
                panic!("the runner did not exit after Ctrl-C:\n{stderr_text}");
            }
        }
    }
    let status = runner.wait().expect("the runner exits");
    assert_eq!(
        status.code(),
        Some(status_code(RunnerStatus::Interrupted)),
        "{stderr_text}"
    );
    assert!(stderr_text.contains("interrupted"), "{stderr_text}");
}
