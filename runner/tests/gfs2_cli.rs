//! Runs `runner gfs2 info|ls|cat|stat|tree` on the image Linux wrote (`fs/tests/data/`) and
//! checks what they print against what Linux recorded of it: the manifest (type, mode, size,
//! links, owner, content hash, symlink target, device numbers, inode, mtime), the `statfs`
//! numbers and `gfs2_edit`'s resource-group index.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

mod common;
use common::{FIXTURES, sha256_hex};

/// Status of a gfs2 command that failed on the image (`RunnerStatus::Gfs2Failed`).
const GFS2_FAILED: i32 = 10;
/// Status of a failure on the host (`RunnerStatus::RunnerError`).
const RUNNER_ERROR: i32 = 9;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The 4 KiB-block image Linux wrote, unpacked once.
fn image() -> &'static Path {
    common::fixture_image()
}

/// One line of the manifest.
#[derive(Clone, Debug)]
struct Entry {
    kind: char,
    mode: u32,
    size: u64,
    nlink: u32,
    data: String,
    inode: u64,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// The manifest by path.
fn manifest() -> &'static BTreeMap<String, Entry> {
    static MANIFEST: OnceLock<BTreeMap<String, Entry>> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join("gfs2-4k.manifest")).unwrap();
        text.lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 10, "{line}");
                let entry = Entry {
                    kind: fields[0].chars().next().unwrap(),
                    mode: u32::from_str_radix(fields[1], 8).unwrap(),
                    size: fields[2].parse().unwrap(),
                    nlink: fields[3].parse().unwrap(),
                    data: fields[4].to_owned(),
                    inode: fields[6].parse().unwrap(),
                    uid: fields[7].parse().unwrap(),
                    gid: fields[8].parse().unwrap(),
                    mtime: fields[9].parse().unwrap(),
                };
                (fields[5].to_owned(), entry)
            })
            .collect()
    })
}

fn entry(path: &str) -> &'static Entry {
    manifest()
        .get(path)
        .unwrap_or_else(|| panic!("{path} is not in the manifest"))
}

/// The names in directory `dir` (`/` or `/a/b`), in byte order.
fn children(dir: &str) -> Vec<&'static str> {
    let prefix = if dir == "/" {
        "/".to_owned()
    } else {
        format!("{dir}/")
    };
    manifest()
        .keys()
        .filter_map(|path| path.strip_prefix(&prefix))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .collect()
}

/// Runs `runner gfs2 ARGS` and returns what it did.
fn gfs2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("gfs2")
        .args(args)
        .output()
        .expect("start the runner")
}

/// Runs a command that must succeed and print nothing on stderr; returns its stdout.
#[track_caller]
fn gfs2_ok(args: &[&str]) -> Vec<u8> {
    let output = gfs2(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{args:?}: {:?}: {stderr}",
        output.status
    );
    assert!(stderr.is_empty(), "{args:?} wrote on stderr: {stderr}");
    output.stdout
}

#[track_caller]
fn gfs2_text(args: &[&str]) -> String {
    String::from_utf8(gfs2_ok(args)).expect("UTF-8 output")
}

fn image_arg() -> &'static str {
    image().to_str().unwrap()
}

/// The UTC `YYYY-MM-DD HH:MM` of `seconds`, computed apart from the runner's own code.
fn utc_minutes(seconds: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute()
    )
}

/// The full `st_mode` an `ls -l` mode string such as `-rwsr-xr-x` stands for.
fn mode_from_string(text: &str) -> u32 {
    let chars: Vec<char> = text.chars().collect();
    assert_eq!(chars.len(), 10, "{text}");
    let file_type = match chars[0] {
        'p' => 0o010000,
        'c' => 0o020000,
        'd' => 0o040000,
        'b' => 0o060000,
        '-' => 0o100000,
        'l' => 0o120000,
        's' => 0o140000,
        other => panic!("type {other} in {text}"),
    };
    let mut mode = file_type;
    for (index, &char) in chars[1..].iter().enumerate() {
        let bit = 1 << (8 - index);
        // The execute positions: 3 (user), 6 (group), 9 (other) of the string.
        let special = match index {
            2 => 0o4000,
            5 => 0o2000,
            8 => 0o1000,
            _ => 0,
        };
        match char {
            '-' => {}
            'r' | 'w' | 'x' => mode |= bit,
            's' | 't' => mode |= bit | special,
            'S' | 'T' => mode |= special,
            other => panic!("{other} in {text}"),
        }
    }
    mode
}

/// Checks one `ls -l` line against the manifest entry of `path`, shown as `shown`.
#[track_caller]
fn check_long_line(line: &str, path: &str, shown: &str) {
    let expected = entry(path);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(mode_from_string(fields[0]), expected.mode, "{line}");
    assert_eq!(fields[1].parse::<u32>().unwrap(), expected.nlink, "{line}");
    assert_eq!(fields[2].parse::<u32>().unwrap(), expected.uid, "{line}");
    assert_eq!(fields[3].parse::<u32>().unwrap(), expected.gid, "{line}");

    let rest = if matches!(expected.kind, 'c' | 'b') {
        let devices = format!("{} {}", fields[4], fields[5]);
        assert_eq!(devices.replace(", ", ","), expected.data, "{line}");
        &fields[6..]
    } else {
        assert_eq!(fields[4].parse::<u64>().unwrap(), expected.size, "{line}");
        &fields[5..]
    };
    let date = format!("{} {}", rest[0], rest[1]);
    assert_eq!(date, utc_minutes(expected.mtime), "{line}");

    let (_, name) = line.split_once(&format!("{date} ")).unwrap();
    if expected.kind == 'l' {
        assert_eq!(name, format!("{shown} -> {}", expected.data), "{line}");
    } else {
        assert_eq!(name, shown, "{line}");
    }
}

#[test]
fn ls_long_of_the_root_matches_the_manifest() {
    let text = gfs2_text(&["ls", "-l", image_arg(), "/"]);
    let mut lines = text.lines();
    let total = lines.next().unwrap();
    assert!(total.starts_with("total "), "{text}");
    total[6..].parse::<u64>().expect("a number of KiB");

    let expected: Vec<&str> = children("/")
        .into_iter()
        .filter(|name| !name.starts_with('.'))
        .collect();
    let lines: Vec<&str> = lines.collect();
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (line, name) in lines.iter().zip(&expected) {
        check_long_line(line, &format!("/{name}"), name);
    }
}

#[test]
fn ls_all_adds_dot_names() {
    let text = gfs2_text(&["ls", "-a", image_arg()]);
    let names: Vec<&str> = text.lines().collect();

    let mut expected = vec![".", ".."];
    expected.extend(children("/"));
    assert_eq!(names, expected);
    assert!(names.contains(&".hidden"));
}

#[test]
fn ls_lists_a_large_directory_in_byte_order() {
    let text = gfs2_text(&["ls", image_arg(), "/big-dir"]);
    let names: Vec<&str> = text.lines().collect();

    assert_eq!(names.len(), 2571);
    assert_eq!(names, children("/big-dir"));
}

#[test]
fn ls_of_a_file_or_symlink_shows_that_file() {
    for path in ["/owned-by-1000", "/chardev", "/setuid-file"] {
        let text = gfs2_text(&["ls", "-l", image_arg(), path]);
        assert_eq!(text.lines().count(), 1, "{text}");
        check_long_line(text.trim_end(), path, path);
    }

    // `-l` shows the link itself; a trailing `/` or no `-l` lists where it points.
    let text = gfs2_text(&["ls", "-l", image_arg(), "/link-to-dir"]);
    check_long_line(text.trim_end(), "/link-to-dir", "/link-to-dir");
    let text = gfs2_text(&["ls", image_arg(), "/link-to-dir"]);
    assert_eq!(text.lines().collect::<Vec<_>>(), children("/dir/sub"));
    let text = gfs2_text(&["ls", "-l", image_arg(), "/link-to-dir/"]);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), children("/dir/sub").len(), "{text}");
    for (line, name) in lines.iter().zip(children("/dir/sub")) {
        check_long_line(line, &format!("/dir/sub/{name}"), name);
    }

    assert_eq!(gfs2_text(&["ls", image_arg(), "hello.txt"]), "hello.txt\n");
}

#[test]
fn cat_writes_the_contents_linux_wrote() {
    let files = [
        "/hello.txt",
        "/empty",
        "/stuffed-max",
        "/unstuffed-min",
        "/one-block",
        "/three-blocks-plus-17",
        "/one-mib",
        "/nine-mib",
        "/sparse",
        "/sparse-tail",
        "/all-hole",
        "/trunc-9m-to-2m",
        "/jdata-big",
        "/jdata-dir/inherited",
        "/big-dir/f02998",
        "/naïve café.txt",
        "/dir/sub/deeper/deepest/file.txt",
    ];

    for path in files {
        let expected = entry(path);
        assert_eq!(expected.kind, 'f', "{path}");
        let content = gfs2_ok(&["cat", image_arg(), path]);
        assert_eq!(content.len() as u64, expected.size, "{path}");
        assert_eq!(sha256_hex(&content), expected.data, "{path}");
    }
}

#[test]
fn cat_follows_symlinks_and_joins_files() {
    let hello = gfs2_ok(&["cat", image_arg(), "/hello.txt"]);
    assert_eq!(gfs2_ok(&["cat", image_arg(), "/link-to-hello"]), hello);
    assert_eq!(
        gfs2_ok(&["cat", image_arg(), "/link-to-dir/deeper/c.txt"]),
        gfs2_ok(&["cat", image_arg(), "/dir/sub/deeper/c.txt"])
    );

    let both = gfs2_ok(&["cat", image_arg(), "/hello.txt", "/exec.sh"]);
    let exec = gfs2_ok(&["cat", image_arg(), "/exec.sh"]);
    assert_eq!(both, [hello, exec].concat());
}

#[test]
fn cat_streams_a_sparse_gibibyte_in_bounded_memory() {
    // Under a 256 MiB address-space limit: the 64 MiB image fits, the 1 GiB file does not.
    let command = r#"ulimit -v 262144 && exec "$0" gfs2 cat "$1" /sparse-1g"#;
    let mut child = Command::new("sh")
        .args(["-c", command, env!("CARGO_BIN_EXE_runner"), image_arg()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");

    let mut stdout = child.stdout.take().unwrap();
    let mut hasher = Sha256::new();
    let mut chunk = vec![0; 1 << 20];
    let mut total = 0u64;
    loop {
        let read = stdout.read(&mut chunk).unwrap();
        if read == 0 {
            break;
        }
        hasher.update(&chunk[..read]);
        total += read as u64;
    }
    assert!(child.wait().unwrap().success());

    let expected = entry("/sparse-1g");
    assert_eq!(total, expected.size);
    assert_eq!(hex(&hasher.finalize()), expected.data);
}

/// The value after `label` on `line`, up to the next space, tab or `)`.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label} in {text}"))
        + label.len();
    let value = text[start..].trim_start();
    let end = value.find([' ', '\t', ')', '\n']).unwrap_or(value.len());
    &value[..end]
}

#[test]
fn stat_shows_what_linux_recorded() {
    let paths = [
        "/hello.txt",
        "/owned-by-1000",
        "/setuid-file",
        "/sticky-dir",
        "/big-dir",
        "/fifo",
        "/chardev",
        "/blockdev",
        "/link-to-hello",
        "/sparse-1g",
    ];

    for path in paths {
        let expected = entry(path);
        let text = gfs2_text(&["stat", image_arg(), path]);

        let file_line = text.lines().next().unwrap();
        if expected.kind == 'l' {
            assert_eq!(file_line, format!("  File: {path} -> {}", expected.data));
        } else {
            assert_eq!(file_line, format!("  File: {path}"));
        }
        assert_eq!(field(&text, "Size:"), expected.size.to_string(), "{text}");
        assert_eq!(field(&text, "IO Block:"), "4096", "{text}");
        assert_eq!(field(&text, "Inode:"), expected.inode.to_string(), "{text}");
        assert_eq!(field(&text, "Links:"), expected.nlink.to_string(), "{text}");
        let access = field(&text, "Access: (");
        assert_eq!(
            access[..4],
            format!("{:04o}", expected.mode & 0o7777),
            "{text}"
        );
        assert_eq!(mode_from_string(&access[5..]), expected.mode, "{text}");
        assert_eq!(field(&text, "Uid: ("), expected.uid.to_string(), "{text}");
        assert_eq!(field(&text, "Gid: ("), expected.gid.to_string(), "{text}");
        let modify = text.lines().find_map(|line| line.strip_prefix("Modify: "));
        let modify = modify.unwrap_or_else(|| panic!("no Modify in {text}"));
        assert!(modify.starts_with(&utc_minutes(expected.mtime)), "{text}");
        assert!(modify.ends_with(" +0000"), "{text}");
        assert_eq!(modify.len(), "2024-01-01 00:00:25.123456789 +0000".len());

        let type_name = match expected.kind {
            'f' if expected.size == 0 => "regular empty file",
            'f' => "regular file",
            'd' => "directory",
            'l' => "symbolic link",
            'p' => "fifo",
            'c' => "character special file",
            'b' => "block special file",
            other => panic!("kind {other}"),
        };
        assert!(text.lines().nth(1).unwrap().ends_with(type_name), "{text}");
        if matches!(expected.kind, 'c' | 'b') {
            assert_eq!(field(&text, "Device type:"), expected.data, "{text}");
        }
    }
}

/// Whether the manifest's symlink at `path` leads to a directory.
fn link_leads_to_directory(path: &str) -> bool {
    let mut current = path.to_owned();
    for _ in 0..40 {
        let entry = match manifest().get(&current) {
            Some(entry) => entry,
            None => return false,
        };
        if entry.kind != 'l' {
            return entry.kind == 'd';
        }
        let parent = &current[..current.rfind('/').unwrap()];
        current = if entry.data.starts_with('/') {
            entry.data.clone()
        } else {
            format!("{parent}/{}", entry.data)
        };
    }
    false
}

#[test]
fn tree_counts_match_the_manifest() {
    let below_root: Vec<(&String, &Entry)> =
        manifest().iter().filter(|(path, _)| *path != "/").collect();
    let count = |show_hidden: bool| {
        let shown: Vec<_> = below_root
            .iter()
            .filter(|(path, _)| show_hidden || !path.contains("/."))
            .collect();
        let directories = shown
            .iter()
            .filter(|(path, entry)| {
                entry.kind == 'd' || (entry.kind == 'l' && link_leads_to_directory(path))
            })
            .count();
        (shown.len(), directories, shown.len() - directories)
    };

    for (all, show_hidden) in [(true, true), (false, false)] {
        let mut args = vec!["tree"];
        if all {
            args.push("-a");
        }
        args.push(image_arg());
        let text = gfs2_text(&args);

        let (entries, directories, files) = count(show_hidden);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "/");
        assert_eq!(lines.len(), 1 + entries + 2, "one line per entry");
        assert_eq!(lines[lines.len() - 2], "");
        assert_eq!(
            lines[lines.len() - 1],
            format!("{directories} directories, {files} files")
        );
        assert_eq!(text.contains(".hidden"), show_hidden);
    }
}

#[test]
fn tree_draws_branches() {
    let text = gfs2_text(&["tree", image_arg(), "/dir"]);
    let expected = "\
/dir
├── a.txt
└── sub
    ├── b.txt
    └── deeper
        ├── c.txt
        └── deepest
            └── file.txt

3 directories, 4 files
";
    assert_eq!(text, expected);
    for path in [
        "/dir/a.txt",
        "/dir/sub/b.txt",
        "/dir/sub/deeper/c.txt",
        "/dir/sub/deeper/deepest/file.txt",
    ] {
        assert_eq!(entry(path).kind, 'f');
    }

    let text = gfs2_text(&["tree", image_arg(), "/link-to-dir"]);
    assert!(
        text.starts_with("/link-to-dir\n├── b.txt\n└── deeper\n"),
        "{text}"
    );
}

#[test]
fn info_shows_the_superblock_and_resource_groups() {
    let text = gfs2_text(&["info", image_arg()]);
    let value = |label: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {text}"))
            .trim()
            .to_owned()
    };

    assert_eq!(value("block size"), "4096 bytes");
    assert_eq!(value("lock protocol"), "lock_nolock");
    assert_eq!(value("lock table"), "fixture:gfs2-4k");
    assert_eq!(value("uuid"), "6f3c1c7e-4b2a-4d5e-9a41-000000004096");
    assert_eq!(value("format"), "1802 (multihost 1900)");
    assert_eq!(value("root directory"), "inode 2339 (formal 12)");
    assert_eq!(value("master directory"), "inode 2072 (formal 2)");
    assert_eq!(value("blocks"), "16384 of 4096 bytes (64.0 MiB)");
    assert_eq!(entry("/").inode, 2339);

    // The rgrps as `gfs2_edit -p rindex` listed them.
    let info = std::fs::read_to_string(Path::new(FIXTURES).join("gfs2-4k.info")).unwrap();
    let rindex = |name: &str| -> Vec<u64> {
        info.lines()
            .filter_map(|line| line.trim().strip_prefix(name))
            .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    };
    let (addrs, lengths, data) = (rindex("ri_addr"), rindex("ri_length"), rindex("ri_data "));
    assert_eq!(value("resource groups"), addrs.len().to_string());
    let rows: Vec<Vec<u64>> = text
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("address"))
        .skip(1)
        .take(addrs.len())
        .map(|line| {
            line.split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .collect();
    for (index, row) in rows.iter().enumerate() {
        assert_eq!(
            row[..3],
            [addrs[index], lengths[index], data[index]],
            "{text}"
        );
    }

    // statfs as Linux reported it: bsize blocks bfree bavail files ffree.
    let extra = std::fs::read_to_string(Path::new(FIXTURES).join("gfs2-4k.extra")).unwrap();
    let statfs: Vec<u64> = extra
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (blocks, free, files) = (statfs[1], statfs[2], statfs[4]);
    assert_eq!(
        value("data blocks"),
        format!("{blocks} ({free} free, {} used)", blocks - free)
    );
    assert_eq!(value("dinodes"), (files - free).to_string());
    let free_column: u64 = rows.iter().map(|row| row[3]).sum();
    let dinode_column: u64 = rows.iter().map(|row| row[4]).sum();
    assert_eq!((free_column, dinode_column), (free, files - free));
}

#[test]
fn info_warns_when_a_header_disagrees_with_its_bitmap() {
    // A copy of the image whose second rgrp header claims one more free block, with its
    // checksum recomputed so the header itself stays valid.
    const RGRP_BLOCK: usize = 2074;
    const FREE_OFFSET: usize = 28;
    const CRC_OFFSET: usize = 64;
    let mut bytes = std::fs::read(image()).unwrap();
    let header = &mut bytes[RGRP_BLOCK * 4096..][..4096];
    let free = fs::gfs2::RgrpHeader::decode(header).free;
    header[FREE_OFFSET..FREE_OFFSET + 4].copy_from_slice(&(free + 1).to_be_bytes());
    let crc = fs::gfs2::RgrpHeader::compute_crc(header);
    header[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    let patched = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gfs2-cli-bad-free.img");
    std::fs::write(&patched, &bytes).unwrap();

    let output = gfs2(&["info", patched.to_str().unwrap()]);
    let _ = std::fs::remove_file(&patched);

    assert!(output.status.success(), "{:?}", output.status);
    let bitmap_free = 2771;
    assert_eq!(free, bitmap_free);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let total_free: u64 = 8167;
    assert_eq!(
        stderr,
        format!(
            "runner: warning: resource group at block {RGRP_BLOCK}: the headers count {} free \
             blocks, the bitmaps {bitmap_free}\n\
             runner: warning: all resource groups: the headers count {} free blocks, the \
             bitmaps {total_free}\n",
            bitmap_free + 1,
            total_free + 1
        )
    );
}

/// Runs a command that must fail with `status`, naming `needle` in its message.
#[track_caller]
fn check_failure(args: &[&str], status: i32, needle: &str) {
    let output = gfs2(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
    assert!(stderr.starts_with("runner: "), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?} wrote on stdout");
}

#[test]
fn errors_name_the_path_and_the_problem() {
    let image = image_arg();
    let missing = "cannot access '/nope': No such file or directory";

    check_failure(&["ls", image, "/nope"], GFS2_FAILED, missing);
    check_failure(&["ls", "-l", image, "/nope"], GFS2_FAILED, missing);
    check_failure(&["stat", image, "/nope"], GFS2_FAILED, missing);
    check_failure(&["tree", image, "/nope"], GFS2_FAILED, missing);
    check_failure(&["cat", image, "/nope"], GFS2_FAILED, missing);
    check_failure(
        &["cat", image, "/dir"],
        GFS2_FAILED,
        "cannot read '/dir': Is a directory",
    );
    check_failure(
        &["cat", image, "/fifo"],
        GFS2_FAILED,
        "cannot read '/fifo': Not a regular file",
    );
    check_failure(
        &["ls", image, "/hello.txt/x"],
        GFS2_FAILED,
        "cannot access '/hello.txt/x': Not a directory",
    );
    check_failure(
        &["cat", image, "/dangling-link"],
        GFS2_FAILED,
        "cannot access '/dangling-link': No such file or directory",
    );
}

#[test]
fn cat_goes_on_after_a_missing_file() {
    let output = gfs2(&["cat", image_arg(), "/hello.txt", "/nope", "/exec.sh"]);

    assert_eq!(output.status.code(), Some(GFS2_FAILED));
    let expected = [
        gfs2_ok(&["cat", image_arg(), "/hello.txt"]),
        gfs2_ok(&["cat", image_arg(), "/exec.sh"]),
    ]
    .concat();
    assert_eq!(output.stdout, expected);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "runner: cannot access '/nope': No such file or directory\n"
    );
}

#[test]
fn images_that_are_missing_or_not_gfs2_are_refused() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gfs2-cli-no-such.img");
    let missing = missing.to_str().unwrap();
    check_failure(
        &["info", missing],
        RUNNER_ERROR,
        &format!("cannot read the image '{missing}'"),
    );

    let zeros = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gfs2-cli-zeros.img");
    std::fs::File::create(&zeros)
        .and_then(|mut file| file.write_all(&[0; 1 << 20]))
        .unwrap();
    let zeros = zeros.to_str().unwrap();
    check_failure(
        &["ls", zeros],
        GFS2_FAILED,
        &format!("cannot open a gfs2 filesystem in '{zeros}': corrupt filesystem"),
    );
}

#[test]
fn a_closed_pipe_ends_cat_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["gfs2", "cat", image_arg(), "/nine-mib"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut start = [0; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut start)
        .unwrap();
    drop(child.stdout.take());

    let output = child.wait_with_output().unwrap();
    assert_eq!(&start, b"07:000000000000\n");
    assert!(output.status.success(), "{:?}", output.status);
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
