//! `runner`: builds the kernel, boots it in QEMU and prints its decoded log.
//!
//! `cargo run` is `runner` without arguments: build the riscv64 kernel and boot it.
//! `runner [FLAGS]` is short for `runner run [FLAGS]`; later subcommands sit beside `run`.
//! The exit statuses are listed in the library's documentation and in `runner --help`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use runner::{Arch, Echo, ImageFormat, LogLevel, RunConfig, RunnerStatus};

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    about = "Build the kernel, boot it in QEMU and print its decoded defmt log",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// `runner [FLAGS]` means `runner run [FLAGS]`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the kernel (unless --kernel is given) and boot it in QEMU (the default).
    Run(RunArgs),
}

#[derive(Debug, Clone, PartialEq, Args)]
struct RunArgs {
    /// The machine to boot.
    #[arg(long, value_enum, default_value_t = Arch::Riscv64)]
    arch: Arch,

    /// Kill QEMU when the kernel has not stopped after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_timeout)]
    timeout: f64,

    /// The kernel command line, e.g. `test`, `test=mem::`, `panic`, `fault=read`.
    #[arg(long, value_name = "CMDLINE", default_value = "")]
    append: String,

    /// Number of CPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    smp: u32,

    /// RAM in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..))]
    memory: u32,

    /// Boot this kernel ELF instead of building one.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,

    /// The defmt log levels compiled into the kernel (DEFMT_LOG).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,

    /// riscv64: boot the flat binary image behind padded OpenSBI, loaded at 0x80400000.
    #[arg(long)]
    flat_image: bool,

    /// An extra argument for QEMU (repeat for more).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    qemu_arg: Vec<String>,

    /// Print the QEMU command line and the firmware's output too.
    #[arg(long, short)]
    verbose: bool,
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0 {
        Ok(seconds)
    } else {
        Err("the timeout must be more than 0 and at most 86400 seconds".into())
    }
}

/// Parses the command line (`args` includes the program name), with the exit status table in
/// the help text.
fn parse_cli(args: impl IntoIterator<Item = String>) -> Result<Cli, clap::Error> {
    let exit_statuses = format!("Exit status:\n{}", RunnerStatus::table());
    let command = Cli::command().after_help(exit_statuses);
    let matches = command.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

fn main() -> ExitCode {
    let cli = match parse_cli(std::env::args()) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(RunnerStatus::Usage.code())
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    let status = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run(&args),
    };
    ExitCode::from(status.code())
}

fn run(args: &RunArgs) -> RunnerStatus {
    if let Err(error) = runner::install_ctrl_c_handler() {
        eprintln!("runner: cannot handle Ctrl-C ({error}); it will leave QEMU to die with us");
    }

    match run_kernel(args) {
        Ok(report) => {
            eprintln!(
                "{} ({:.3} s)",
                report.outcome,
                report.wall_time.as_secs_f64()
            );
            report.outcome.runner_status()
        }
        Err(error) => {
            eprintln!("runner: {error}");
            error.runner_status()
        }
    }
}

fn run_kernel(args: &RunArgs) -> Result<runner::RunReport, runner::Error> {
    let kernel = match &args.kernel {
        Some(path) => path.clone(),
        None => runner::build_kernel(args.arch, args.log_level)?,
    };
    Ok(runner::run(&run_config(args, kernel))?)
}

/// The library's run settings for `args`.
fn run_config(args: &RunArgs, kernel: PathBuf) -> RunConfig {
    RunConfig {
        arch: args.arch,
        kernel,
        image_format: if args.flat_image {
            ImageFormat::FlatAtSecondAddress
        } else {
            ImageFormat::Elf
        },
        command_line: args.append.clone(),
        smp: args.smp,
        memory_mib: args.memory,
        timeout: Duration::from_secs_f64(args.timeout),
        extra_qemu_args: args.qemu_arg.iter().map(Into::into).collect(),
        echo: Some(Echo {
            // https://no-color.org: a set, non-empty NO_COLOR turns colours off.
            color: std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
            verbose: args.verbose,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_cli(
            std::iter::once("runner")
                .chain(args.iter().copied())
                .map(String::from),
        )
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = parse(args).unwrap_or_else(|error| panic!("{args:?}: {error}"));
        match cli.command {
            Some(Command::Run(run)) => run,
            None => cli.run,
        }
    }

    #[test]
    fn no_arguments_boots_riscv64_with_defaults() {
        let args = run_args(&[]);
        assert_eq!(args.arch, Arch::Riscv64);
        assert_eq!(args.timeout, 60.0);
        assert_eq!(args.append, "");
        assert_eq!(args.smp, 1);
        assert_eq!(args.memory, 256);
        assert_eq!(args.kernel, None);
        assert_eq!(args.log_level, LogLevel::Info);
        assert!(!args.flat_image && !args.verbose);
        assert!(args.qemu_arg.is_empty());
    }

    #[test]
    fn bare_flags_mean_run() {
        let flags = [
            "--arch",
            "x86_64",
            "--timeout",
            "2.5",
            "--append",
            "test fault=read",
            "--smp",
            "4",
            "--memory",
            "512",
            "--kernel",
            "/tmp/kernel",
            "--log-level",
            "debug",
            "--qemu-arg",
            "-S",
            "--qemu-arg=-d",
            "--verbose",
        ];
        let bare = run_args(&flags);
        let mut with_run = vec!["run"];
        with_run.extend(flags);
        assert_eq!(bare, run_args(&with_run));

        assert_eq!(bare.arch, Arch::X86_64);
        assert_eq!(bare.timeout, 2.5);
        assert_eq!(bare.append, "test fault=read");
        assert_eq!(bare.smp, 4);
        assert_eq!(bare.memory, 512);
        assert_eq!(bare.kernel, Some(PathBuf::from("/tmp/kernel")));
        assert_eq!(bare.log_level, LogLevel::Debug);
        assert_eq!(bare.qemu_arg, ["-S", "-d"]);
        assert!(bare.verbose);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--arch", "arm"][..],
            &["--timeout", "0"],
            &["--timeout", "soon"],
            &["--smp", "0"],
            &["--memory", "1"],
            &["--log-level", "loud"],
            &["--no-such-flag"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?} parsed"));
            assert!(error.use_stderr(), "{args:?}: {error}");
        }
    }

    #[test]
    fn flags_become_run_config() {
        let args = run_args(&["--flat-image", "--timeout", "0.5", "--append", "panic"]);
        let config = run_config(&args, PathBuf::from("/k"));
        assert_eq!(config.image_format, ImageFormat::FlatAtSecondAddress);
        assert_eq!(config.timeout, Duration::from_millis(500));
        assert_eq!(config.command_line, "panic");
        assert_eq!(config.kernel, PathBuf::from("/k"));
    }

    #[test]
    fn help_lists_exit_statuses() {
        let error = parse(&["--help"]).expect_err("--help stops parsing");
        assert!(!error.use_stderr());
        let help = error.to_string();
        for status in RunnerStatus::ALL {
            assert!(help.contains(status.meaning()), "{help}");
        }
    }
}
