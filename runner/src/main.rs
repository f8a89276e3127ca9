//! `runner`: builds the kernel, boots it in QEMU and prints its decoded log.
//!
//! `cargo run` is `runner` without arguments: build the riscv64 kernel and boot it.
//! `runner [FLAGS]` is short for `runner run [FLAGS]`; `runner gfs2 ...` looks inside gfs2
//! images with the kernel's reader.
//! The exit statuses are listed in the library's documentation and in `runner --help`.

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use runner::gfs2::{Gfs2Error, ImageFilesystem};
use runner::{
    Arch, BootLoader, DiskBus, DiskImage, Echo, ImageFormat, LogLevel, RunConfig, RunnerStatus,
};

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
    /// Look inside a gfs2 image file with the kernel's gfs2 reader.
    #[command(subcommand)]
    Gfs2(Gfs2Command),
    /// Read a 64 MiB file cold and hot in the kernel on each architecture; print a table.
    Bench(BenchArgs),
}

/// `runner bench`.
#[derive(Debug, Clone, PartialEq, Args)]
struct BenchArgs {
    /// Only this architecture (default: both).
    #[arg(long, value_enum)]
    arch: Option<Arch>,

    /// Kill QEMU when a run has not stopped after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600.0, value_parser = parse_timeout)]
    timeout: f64,
}

/// `runner gfs2 ...`: paths inside the image start at its root; a leading `/` is optional.
#[derive(Debug, Clone, PartialEq, Subcommand)]
enum Gfs2Command {
    /// The superblock, the size, each resource group, and the free and used blocks.
    Info {
        /// The image file.
        image: PathBuf,
    },
    /// List a directory (or name a file), one name a line, sorted by bytes like `LC_ALL=C ls`.
    Ls {
        /// Long listing, like `ls -l`: mode, links, uid, gid, size, mtime (UTC), name.
        #[arg(short = 'l')]
        long: bool,
        /// Also list names that start with `.`, `.` and `..` included.
        #[arg(short, long)]
        all: bool,
        /// The image file.
        image: PathBuf,
        /// The directory or file to list.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Write the content of files to stdout, byte for byte (following symlinks).
    Cat {
        /// The image file.
        image: PathBuf,
        /// The files to write, in order.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Show the attributes of a file (not following a final symlink), like `stat`.
    Stat {
        /// The image file.
        image: PathBuf,
        /// The file.
        path: String,
    },
    /// Build a gfs2 image from a directory, like `mkfs.ext4 -d`; replaces OUT.
    Mkfs(MkfsArgs),
    /// Draw the tree under a directory, like `tree`, with the count of directories and files.
    Tree {
        /// Also show names that start with `.`.
        #[arg(short, long)]
        all: bool,
        /// The image file.
        image: PathBuf,
        /// The directory to draw.
        #[arg(default_value = "/")]
        path: String,
    },
}

/// `runner gfs2 mkfs`.
#[derive(Debug, Clone, PartialEq, Args)]
struct MkfsArgs {
    /// Filesystem block size in bytes.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = runner::mkfs::parse_block_size)]
    block_size: u32,
    /// Image size, in bytes or with a K, M, G or T suffix (powers of 1024); by default a size
    /// that fits the tree with room to spare.
    #[arg(long, value_name = "S", value_parser = runner::mkfs::parse_size)]
    size: Option<u64>,
    /// Number of journals: how many nodes may mount the filesystem at once.
    #[arg(long, value_name = "J", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    journals: u32,
    /// The directory whose tree the image holds.
    source: PathBuf,
    /// The image file to write.
    output: PathBuf,
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

    /// What boots the kernel: `u-boot` (riscv64) types `booti` at U-Boot's console, with the
    /// flat image and the initrd in RAM, as on a VisionFive 2.
    #[arg(long, value_enum, value_name = "LOADER", default_value_t = BootLoader::Direct, conflicts_with = "flat_image")]
    boot_loader: BootLoader,

    /// A raw disk image the kernel sees as a read-only virtio-blk disk (repeat for more).
    #[arg(long, value_name = "PATH")]
    image: Vec<PathBuf>,

    /// How the disk images are attached (default: mmio on riscv64, pci on x86_64).
    #[arg(long, value_enum, value_name = "BUS")]
    disk_bus: Option<DiskBus>,

    /// A file QEMU loads as the initrd (the kernel reads it as the disk `initrd`).
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,

    /// Boot without the demo disk that is attached when neither --image nor --initrd is given.
    #[arg(long, conflicts_with_all = ["image", "initrd"])]
    no_disk: bool,

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
        Command::Gfs2(command) => gfs2(&command),
        Command::Bench(args) => bench(&args),
    };
    ExitCode::from(status.code())
}

fn run(args: &RunArgs) -> RunnerStatus {
    if let Err(error) = runner::install_ctrl_c_handler() {
        eprintln!("runner: cannot handle Ctrl-C ({error}); it will leave QEMU to die with us");
    }

    // The demo disk, rebuilt from `demo/` only when a file there changed, and only built when
    // no other disk was asked for.
    let wants_demo_disk = args.image.is_empty() && args.initrd.is_none() && !args.no_disk;
    let demo_image = match wants_demo_disk.then(runner::mkfs::demo_image).transpose() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("runner: cannot build the demo image: {error}");
            return error.runner_status();
        }
    };

    match run_kernel(args, demo_image.as_deref()) {
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

/// Boots the kernel, with the demo image as its disk when one is given.
fn run_kernel(
    args: &RunArgs,
    demo_image: Option<&Path>,
) -> Result<runner::RunReport, runner::Error> {
    let kernel = match &args.kernel {
        Some(path) => path.clone(),
        None => runner::build_kernel(args.arch, args.log_level)?,
    };
    let mut config = run_config(args, kernel);
    if let Some(demo_image) = demo_image {
        config.disks.push(DiskImage {
            path: demo_image.to_owned(),
            bus: args.disk_bus.unwrap_or(DiskBus::default_for(args.arch)),
            blkdebug_config: None,
        });
    }
    Ok(runner::run(&config)?)
}

/// Runs `runner bench`: one benchmark run per architecture, then the table of results.
fn bench(args: &BenchArgs) -> RunnerStatus {
    if let Err(error) = runner::install_ctrl_c_handler() {
        eprintln!("runner: cannot handle Ctrl-C ({error}); it will leave QEMU to die with us");
    }
    let arches = match args.arch {
        Some(arch) => vec![arch],
        None => vec![Arch::Riscv64, Arch::X86_64],
    };
    let mut results = Vec::new();
    for arch in arches {
        eprintln!("runner: benchmarking {arch} (64 MiB cold, hot, and cached 4 KiB reads)");
        match runner::bench::run_bench(arch, Duration::from_secs_f64(args.timeout)) {
            Ok(result) => results.push(result),
            Err(error) => {
                eprintln!("runner: {error}");
                return match error {
                    runner::bench::BenchError::Runner(error) => error.runner_status(),
                    runner::bench::BenchError::Image(error) => error.runner_status(),
                    runner::bench::BenchError::NoResult { .. } => RunnerStatus::RunnerError,
                };
            }
        }
    }
    print!("{}", runner::bench::table(&results));
    RunnerStatus::Success
}

/// Runs a `runner gfs2` command: prints what went wrong on stderr and returns the status.
fn gfs2(command: &Gfs2Command) -> RunnerStatus {
    use runner::gfs2::{self, Hidden};

    let hidden = |all: bool| if all { Hidden::Show } else { Hidden::Skip };
    let errors = match command {
        Gfs2Command::Mkfs(args) => return mkfs(args),
        Gfs2Command::Info { image } => inspect(image, |filesystem, out| {
            for warning in gfs2::info(filesystem, out)? {
                eprintln!("runner: warning: {warning}");
            }
            Ok(())
        }),
        Gfs2Command::Ls {
            long,
            all,
            image,
            path,
        } => inspect(image, |filesystem, out| {
            gfs2::ls(filesystem, path, *long, hidden(*all), out)
        }),
        Gfs2Command::Cat { image, paths } => inspect_each(image, paths, gfs2::cat),
        Gfs2Command::Stat { image, path } => {
            inspect(image, |filesystem, out| gfs2::stat(filesystem, path, out))
        }
        Gfs2Command::Tree { all, image, path } => inspect(image, |filesystem, out| {
            gfs2::tree(filesystem, path, hidden(*all), out).map(|_| ())
        }),
    };

    // A reader that closed the pipe early (`... | head`) has all it wanted: no message and no
    // failure, as with `rg` or `fd`.
    let mut status = RunnerStatus::Success;
    for error in errors.iter().filter(|error| !error.is_broken_pipe()) {
        eprintln!("runner: {error}");
        if status == RunnerStatus::Success {
            status = error.runner_status();
        }
    }
    status
}

/// Runs `runner gfs2 mkfs`: builds the image and prints what it made.
fn mkfs(args: &MkfsArgs) -> RunnerStatus {
    let options = runner::mkfs::Options {
        block_size: args.block_size,
        size: args.size,
        journals: args.journals,
        ..runner::mkfs::Options::default()
    };
    match runner::mkfs::make_image(&args.source, &args.output, &options) {
        Ok(summary) => {
            println!("{}: {summary}", args.output.display());
            RunnerStatus::Success
        }
        Err(error) => {
            eprintln!("runner: {error}");
            error.runner_status()
        }
    }
}

/// Opens the image file `image` and runs `command` on it with a buffered stdout.
fn inspect(
    image: &Path,
    command: impl FnOnce(&ImageFilesystem<'_>, &mut dyn Write) -> Result<(), Gfs2Error>,
) -> Vec<Gfs2Error> {
    with_image(image, |filesystem, out| {
        command(filesystem, out).err().into_iter().collect()
    })
}

/// Opens the image file `image` and runs `command` for each of `paths` with a buffered
/// stdout, going on after a path that fails as `cat` does; returns every error.
fn inspect_each(
    image: &Path,
    paths: &[String],
    command: impl Fn(&ImageFilesystem<'_>, &str, &mut dyn Write) -> Result<(), Gfs2Error>,
) -> Vec<Gfs2Error> {
    with_image(image, |filesystem, out| {
        let mut errors = Vec::new();
        for path in paths {
            match command(filesystem, path, out) {
                Ok(()) => {}
                Err(error) if error.is_broken_pipe() => return vec![error],
                Err(error) => errors.push(error),
            }
        }
        errors
    })
}

/// Reads the image file `image`, opens its filesystem and runs `body` with a buffered stdout,
/// which it flushes; returns every error.
fn with_image(
    image: &Path,
    body: impl FnOnce(&ImageFilesystem<'_>, &mut dyn Write) -> Vec<Gfs2Error>,
) -> Vec<Gfs2Error> {
    let image = match runner::gfs2::Image::read(image) {
        Ok(image) => image,
        Err(error) => return vec![error],
    };
    let filesystem = match image.open() {
        Ok(filesystem) => filesystem,
        Err(error) => return vec![error],
    };

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut errors = body(&filesystem, &mut out);
    if let Err(error) = out.flush() {
        errors.push(error.into());
    }
    errors
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
        boot_loader: args.boot_loader,
        command_line: args.append.clone(),
        smp: args.smp,
        memory_mib: args.memory,
        timeout: Duration::from_secs_f64(args.timeout),
        disks: args
            .image
            .iter()
            .map(|path| DiskImage {
                path: path.clone(),
                bus: args.disk_bus.unwrap_or(DiskBus::default_for(args.arch)),
                blkdebug_config: None,
            })
            .collect(),
        initrd: args.initrd.clone(),
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
            Some(other) => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn gfs2_command(args: &[&str]) -> Gfs2Command {
        match parse(args).map(|cli| cli.command) {
            Ok(Some(Command::Gfs2(command))) => command,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn gfs2_commands_parse_with_their_defaults() {
        assert_eq!(
            gfs2_command(&["gfs2", "ls", "-la", "disk.img"]),
            Gfs2Command::Ls {
                long: true,
                all: true,
                image: PathBuf::from("disk.img"),
                path: "/".into(),
            }
        );
        assert_eq!(
            gfs2_command(&["gfs2", "tree", "disk.img", "/dir"]),
            Gfs2Command::Tree {
                all: false,
                image: PathBuf::from("disk.img"),
                path: "/dir".into(),
            }
        );
        assert_eq!(
            gfs2_command(&["gfs2", "cat", "disk.img", "/a", "/b"]),
            Gfs2Command::Cat {
                image: PathBuf::from("disk.img"),
                paths: vec!["/a".into(), "/b".into()],
            }
        );
    }

    #[test]
    fn gfs2_mkfs_parses_sizes_and_defaults() {
        assert_eq!(
            gfs2_command(&["gfs2", "mkfs", "src", "out.img"]),
            Gfs2Command::Mkfs(MkfsArgs {
                block_size: 4096,
                size: None,
                journals: 1,
                source: PathBuf::from("src"),
                output: PathBuf::from("out.img"),
            })
        );
        assert_eq!(
            gfs2_command(&[
                "gfs2",
                "mkfs",
                "--block-size",
                "512",
                "--size",
                "64M",
                "--journals",
                "3",
                "src",
                "out.img",
            ]),
            Gfs2Command::Mkfs(MkfsArgs {
                block_size: 512,
                size: Some(64 << 20),
                journals: 3,
                source: PathBuf::from("src"),
                output: PathBuf::from("out.img"),
            })
        );
        for args in [
            &["gfs2", "mkfs", "src"][..],
            &["gfs2", "mkfs", "--block-size", "8192", "src", "out.img"],
            &["gfs2", "mkfs", "--size", "lots", "src", "out.img"],
            &["gfs2", "mkfs", "--journals", "0", "src", "out.img"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?} parsed"));
            assert!(error.use_stderr(), "{args:?}: {error}");
        }
    }

    #[test]
    fn gfs2_commands_without_their_operands_are_usage_errors() {
        for args in [
            &["gfs2"][..],
            &["gfs2", "info"],
            &["gfs2", "cat", "disk.img"],
            &["gfs2", "stat", "disk.img"],
            &["gfs2", "ls", "disk.img", "/a", "/b"],
            &["gfs2", "ls", "--arch", "x86_64", "disk.img"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?} parsed"));
            assert!(error.use_stderr(), "{args:?}: {error}");
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
    fn boot_loader_flag_chooses_u_boot() {
        assert_eq!(run_args(&[]).boot_loader, BootLoader::Direct);
        let args = run_args(&["--boot-loader", "u-boot", "--initrd", "root.img"]);
        assert_eq!(
            run_config(&args, PathBuf::from("/k")).boot_loader,
            BootLoader::UBoot
        );
        for args in [
            &["--boot-loader", "grub"][..],
            &["--boot-loader", "u-boot", "--flat-image"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?} parsed"));
            assert!(error.use_stderr(), "{args:?}: {error}");
        }
    }

    #[test]
    fn disk_flags_become_disks_and_initrd() {
        let args = run_args(&[
            "--arch", "x86_64", "--image", "a.img", "--image", "b.img", "--initrd", "root.img",
        ]);
        let config = run_config(&args, PathBuf::from("/k"));
        let disk = |path: &str| DiskImage {
            path: PathBuf::from(path),
            bus: DiskBus::Pci,
            blkdebug_config: None,
        };
        assert_eq!(config.disks, [disk("a.img"), disk("b.img")]);
        assert_eq!(config.initrd, Some(PathBuf::from("root.img")));

        let args = run_args(&["--image", "a.img", "--disk-bus", "mmio-modern"]);
        let config = run_config(&args, PathBuf::from("/k"));
        assert_eq!(config.disks[0].bus, DiskBus::MmioModern);
        assert!(
            run_config(&run_args(&[]), PathBuf::from("/k"))
                .disks
                .is_empty()
        );
        assert!(parse(&["--disk-bus", "scsi"]).is_err());
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
