//! Boots the riscv64 kernel through U-Boot's `booti`, as a StarFive VisionFive 2 boots it:
//! OpenSBI, then Debian's S-mode U-Boot for QEMU, which the runner drives through the serial
//! console (stop autoboot, `setenv bootargs ...; booti ...`) with the flat image and the initrd
//! placed in RAM (see `runner/src/uboot.rs`).
//!
//! The in-kernel tests must pass after U-Boot moved the image to its own choice of address,
//! which the kernel must report as its load address; the Linux-written fixture, handed over
//! as the initrd whose bounds U-Boot writes into the device tree, must read file for file as
//! the manifest says; and a `booti` that U-Boot refuses must end the run at once with
//! U-Boot's complaint, not at the timeout.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    SIZE_LIMIT, check, check_boot_log, check_every_file, check_every_kernel_test_passes,
    fixture_image, message_starting, parse_hex,
};
use runner::uboot::{INITRD_ADDRESS, KERNEL_ADDRESS, UBootError};
use runner::{Arch, BootLoader, LogLevel, Outcome, QemuFailure, RunConfig, RunError, RunReport};

fn kernel(arch: Arch) -> PathBuf {
    runner::build_kernel(arch, LogLevel::Info)
        .unwrap_or_else(|error| panic!("building the {arch} kernel: {error}"))
}

/// Settings to boot the kernel ELF `kernel` through U-Boot with `command_line`.
fn config_through_u_boot(kernel: PathBuf, command_line: &str) -> RunConfig {
    let mut config = RunConfig::new(Arch::Riscv64, kernel);
    config.boot_loader = BootLoader::UBoot;
    config.command_line = command_line.to_owned();
    config.timeout = Duration::from_secs(240);
    config
}

fn run(config: &RunConfig) -> RunReport {
    runner::run(config).unwrap_or_else(|error| panic!("running through U-Boot: {error}"))
}

/// The address U-Boot says `booti` moved the image to (`Moving Image from A to B, ...`), or
/// where it was placed when U-Boot did not move it.
fn address_u_boot_moved_the_image_to(report: &RunReport) -> u64 {
    report
        .firmware_lines
        .iter()
        .find_map(|line| {
            let (from, to) = line
                .strip_prefix("Moving Image from ")?
                .split_once(" to ")?;
            check(
                report,
                parse_hex(from) == Some(KERNEL_ADDRESS),
                "U-Boot moved the image from somewhere else than where it was placed",
            );
            parse_hex(to)
        })
        .unwrap_or(KERNEL_ADDRESS)
}

/// What follows `prefix` in the first firmware line that starts with it.
fn firmware_value<'r>(report: &'r RunReport, prefix: &str) -> Option<&'r str> {
    report
        .firmware_lines
        .iter()
        .find_map(|line| line.strip_prefix(prefix))
}

#[test]
fn riscv64_kernel_tests_pass_after_u_boot_booti() {
    let mut config = config_through_u_boot(kernel(Arch::Riscv64), "test");
    config.smp = 2;
    let report = run(&config);

    check(
        &report,
        report
            .firmware_lines
            .iter()
            .any(|line| line.starts_with("U-Boot 20"))
            && firmware_value(&report, "Starting kernel").is_some(),
        "U-Boot did not start the kernel",
    );
    check_every_kernel_test_passes(Arch::Riscv64, &report);
    // The command line reached the kernel through U-Boot's `bootargs`, and the kernel says it
    // runs where `booti` put it.
    let load_address = address_u_boot_moved_the_image_to(&report);
    check_boot_log(Arch::Riscv64, &report, "test", load_address);

    // The kernel runs on the hart OpenSBI booted U-Boot on (`booti` passes it in a0).
    let opensbi_boot_hart = firmware_value(&report, "Boot HART ID")
        .and_then(|rest| rest.trim_start().strip_prefix(':'))
        .and_then(|hart| hart.trim().parse::<u64>().ok());
    let kernel_boot_hart = message_starting(&report, "booting on riscv64, boot cpu ")
        .and_then(|message| message.strip_prefix("booting on riscv64, boot cpu "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|hart| hart.parse::<u64>().ok());
    check(
        &report,
        opensbi_boot_hart.is_some_and(|hart| hart < 2) && kernel_boot_hart == opensbi_boot_hart,
        &format!(
            "the kernel says it boots on hart {kernel_boot_hart:?}, OpenSBI booted \
             {opensbi_boot_hart:?}"
        ),
    );
}

#[test]
fn riscv64_initrd_through_u_boot_reads_every_file() {
    let image = fixture_image();
    let size = std::fs::metadata(image).unwrap().len();
    let mut config = config_through_u_boot(
        kernel(Arch::Riscv64),
        &format!("root=initrd sha256-all={SIZE_LIMIT}"),
    );
    config.initrd = Some(image.to_owned());
    let report = run(&config);

    // The kernel found the initrd where it was placed, from U-Boot's `/chosen`.
    let expected = format!("initrd: {INITRD_ADDRESS:#x}..{:#x}", INITRD_ADDRESS + size);
    check(
        &report,
        report.messages().any(|message| message == expected),
        &format!("no line {expected:?}"),
    );
    check_every_file(&report, Some(SIZE_LIMIT), "initrd");
}

#[test]
fn riscv64_image_u_boot_refuses_ends_the_run_with_its_message() {
    // The x86_64 kernel's flat image has no RISC-V Image header: `booti` refuses it and U-Boot
    // returns to its prompt. The runner stops QEMU then, long before the timeout.
    let mut config = config_through_u_boot(kernel(Arch::X86_64), "test");
    config.timeout = Duration::from_secs(120);
    let report = run(&config);

    let reason = match &report.outcome {
        Outcome::QemuFailed(QemuFailure::BootLoaderFailed(reason)) => reason.clone(),
        _ => String::new(),
    };
    check(
        &report,
        reason.contains("Bad Linux RISCV Image magic"),
        &format!("not a boot loader failure naming the bad magic: {reason:?}"),
    );
    check(&report, !report.kernel_started, "a kernel ran");
    check(
        &report,
        report.wall_time < Duration::from_secs(60),
        "the run was not stopped when U-Boot refused the image",
    );
}

#[test]
fn command_lines_u_boot_cannot_carry_are_refused_before_qemu_starts() {
    let config = config_through_u_boot(kernel(Arch::Riscv64), "it's");
    assert!(matches!(
        runner::run(&config),
        Err(RunError::UBoot(UBootError::UnquotableCommandLine(_)))
    ));

    let mut on_x86_64 = config_through_u_boot(kernel(Arch::X86_64), "test");
    on_x86_64.arch = Arch::X86_64;
    assert!(matches!(
        runner::run(&on_x86_64),
        Err(RunError::BootLoaderUnsupported(Arch::X86_64))
    ));
}
