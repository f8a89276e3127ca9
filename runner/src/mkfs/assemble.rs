//! The inodes of the image, in the order they are allocated: the system inodes `mkfs.gfs2`
//! makes, then the source tree.
//!
//! Order (as `mkfs.gfs2` 3.5, which is also the order of formal inode numbers): the journals,
//! the master directory, `jindex`, `per_node` and its three files per journal, `inum`,
//! `statfs`, `rindex`, `quota`, then the root directory and everything below it in the
//! source tree's order (a directory before its entries).

use fs::gfs2::Geometry;
use fs::gfs2::Timestamp;
use fs::gfs2::ondisk::{DIF_JDATA, DIF_SYSTEM};

use super::MkfsError;
use super::plan::{DirEntryPlan, DirPlan, Fill, InodePlan};
use super::source::{Attributes, SourceKind, SourceTree, mode};

/// `di_payload_format` of the `rindex` file.
const RINDEX_FORMAT: u32 = 1100;
/// `di_payload_format` of the `quota` file.
const QUOTA_FORMAT: u32 = 1500;
/// Size of a quota record (`struct gfs2_quota`).
const QUOTA_RECORD_SIZE: usize = 88;
/// Size of each `quota_change{j}` file: fsck wants a multiple of 1 MiB, Linux a multiple of
/// the block size.
const QUOTA_CHANGE_BYTES: u64 = 1 << 20;

/// Every inode of the image and which of them play which system role.
#[derive(Debug)]
pub struct Assembly {
    /// The inodes in allocation order; an inode's formal number is its index + 1.
    pub inodes: Vec<InodePlan>,
    /// How many journals lead the list (inodes `0..journals`).
    pub journals: usize,
    /// The master directory.
    pub master: usize,
    /// The `inum` file: the next formal inode number.
    pub inum: usize,
    /// The `statfs` file: totals of the rgrps.
    pub statfs: usize,
    /// The `rindex` file: the rgrp index.
    pub rindex: usize,
    /// The root directory; the source tree's node `k` is inode `root + k`.
    pub root: usize,
}

impl Assembly {
    /// Plans the system inodes for `journals` journals of `journal_bytes` each, and the
    /// source `tree`, for `geometry`. System inodes get time `now`.
    pub fn new(
        geometry: &Geometry,
        tree: &SourceTree,
        journals: usize,
        journal_bytes: u64,
        now: Timestamp,
    ) -> Result<Self, MkfsError> {
        let system = |mode| Attributes {
            mode,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
            ctime: now,
            major: 0,
            minor: 0,
        };
        let system_file = system(mode::S_IFREG | 0o600);

        // Inode numbers, fixed by the order above.
        let master = journals;
        let jindex = master + 1;
        let per_node = jindex + 1;
        let per_node_files = per_node + 1;
        let inum = per_node_files + 3 * journals;
        let statfs = inum + 1;
        let rindex = statfs + 1;
        let quota = rindex + 1;
        let root = quota + 1;
        let entry = |name: &str, target| DirEntryPlan {
            name: name.as_bytes().to_vec(),
            target,
        };

        let mut inodes = Vec::with_capacity(root + tree.nodes.len());
        for _ in 0..journals {
            inodes.push(InodePlan::file(
                geometry,
                system_file,
                DIF_SYSTEM,
                journal_bytes,
                std::slice::from_ref(&(0..journal_bytes)),
                Fill::Journal,
            ));
        }

        let mut master_entries = vec![entry(".", master), entry("..", master)];
        for (name, target) in [
            ("jindex", jindex),
            ("per_node", per_node),
            ("inum", inum),
            ("statfs", statfs),
            ("rindex", rindex),
            ("quota", quota),
        ] {
            master_entries.push(entry(name, target));
        }
        inodes.push(InodePlan::directory(
            system(mode::S_IFDIR | 0o755),
            DIF_SYSTEM,
            DirPlan::new(geometry, master_entries),
        ));

        let mut jindex_entries = vec![entry(".", jindex), entry("..", master)];
        for journal in 0..journals {
            jindex_entries.push(entry(&format!("journal{journal}"), journal));
        }
        inodes.push(InodePlan::directory(
            system(mode::S_IFDIR | 0o700),
            DIF_SYSTEM,
            DirPlan::new(geometry, jindex_entries),
        ));

        let mut per_node_entries = vec![entry(".", per_node), entry("..", master)];
        for journal in 0..journals {
            let first = per_node_files + 3 * journal;
            per_node_entries.push(entry(&format!("inum_range{journal}"), first));
            per_node_entries.push(entry(&format!("statfs_change{journal}"), first + 1));
            per_node_entries.push(entry(&format!("quota_change{journal}"), first + 2));
        }
        inodes.push(InodePlan::directory(
            system(mode::S_IFDIR | 0o700),
            DIF_SYSTEM,
            DirPlan::new(geometry, per_node_entries),
        ));
        for _ in 0..journals {
            // inum_range{j}: {start, length} = 0; statfs_change{j}: no local change.
            for size in [16, 24] {
                inodes.push(InodePlan::file(
                    geometry,
                    system_file,
                    DIF_SYSTEM | DIF_JDATA,
                    size,
                    std::slice::from_ref(&(0..size)),
                    Fill::Bytes(vec![0; size as usize]),
                ));
            }
            inodes.push(InodePlan::file(
                geometry,
                system_file,
                DIF_SYSTEM,
                QUOTA_CHANGE_BYTES,
                std::slice::from_ref(&(0..QUOTA_CHANGE_BYTES)),
                Fill::QuotaChange,
            ));
        }

        // inum and statfs are filled in once the blocks are allocated; rindex once the rgrps
        // are laid out ([`Assembly::set_rindex`]).
        for size in [8, 24, 0] {
            inodes.push(InodePlan::file(
                geometry,
                system_file,
                DIF_SYSTEM | DIF_JDATA,
                size,
                std::slice::from_ref(&(0..size)),
                Fill::Bytes(vec![0; size as usize]),
            ));
        }
        inodes[rindex].payload_format = RINDEX_FORMAT;

        // Quota records for user 0 and group 0, as mkfs writes them (value 1 each).
        let mut quota_bytes = vec![0; 2 * QUOTA_RECORD_SIZE];
        for record in quota_bytes.chunks_mut(QUOTA_RECORD_SIZE) {
            record[16..24].copy_from_slice(&1u64.to_be_bytes());
        }
        let quota_size = quota_bytes.len() as u64;
        inodes.push(InodePlan::file(
            geometry,
            system_file,
            DIF_SYSTEM | DIF_JDATA,
            quota_size,
            std::slice::from_ref(&(0..quota_size)),
            Fill::Bytes(quota_bytes),
        ));
        inodes[quota].payload_format = QUOTA_FORMAT;

        debug_assert_eq!(inodes.len(), root);
        let parents = parents(tree);
        for (index, node) in tree.nodes.iter().enumerate() {
            inodes.push(user_inode(geometry, root, parents[index], index, node)?);
        }

        Ok(Self {
            inodes,
            journals,
            master,
            inum,
            statfs,
            rindex,
            root,
        })
    }

    /// Sets the content of `rindex`: the encoded entries of every rgrp.
    pub fn set_rindex(&mut self, geometry: &Geometry, bytes: Vec<u8>) {
        let plan = &mut self.inodes[self.rindex];
        let size = bytes.len() as u64;
        let updated = InodePlan::file(
            geometry,
            plan.attributes,
            plan.flags,
            size,
            std::slice::from_ref(&(0..size)),
            Fill::Bytes(bytes),
        );
        plan.content = updated.content;
    }

    /// Link counts: how many directory entries (`.` and `..` included) name each inode.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.inodes.len()];
        for inode in &self.inodes {
            if let super::plan::Content::Directory(dir) = &inode.content {
                for entry in &dir.entries {
                    counts[entry.target] = counts[entry.target].saturating_add(1);
                }
            }
        }
        counts
    }
}

/// The inode of the source tree's node `index`.
fn user_inode(
    geometry: &Geometry,
    root: usize,
    parent: usize,
    index: usize,
    node: &super::source::SourceNode,
) -> Result<InodePlan, MkfsError> {
    let attributes = node.attributes;
    Ok(match &node.kind {
        SourceKind::Regular { size, data } => InodePlan::file(
            geometry,
            attributes,
            0,
            *size,
            data,
            Fill::Source(node.path.clone()),
        ),
        SourceKind::Symlink { target } => {
            // Linux reads a symlink only stuffed, and refuses an empty one.
            let limit = geometry.stuffed_capacity() as usize;
            if target.is_empty() || target.len() >= limit {
                return Err(MkfsError::SymlinkTarget {
                    path: node.path.clone(),
                    length: target.len(),
                    limit: limit - 1,
                    block_size: geometry.bsize,
                });
            }
            let size = target.len() as u64;
            InodePlan::file(
                geometry,
                attributes,
                0,
                size,
                std::slice::from_ref(&(0..size)),
                Fill::Bytes(target.clone()),
            )
        }
        SourceKind::Special => {
            InodePlan::file(geometry, attributes, 0, 0, &[], Fill::Bytes(vec![]))
        }
        SourceKind::Directory { entries } => {
            let mut dir_entries = vec![
                DirEntryPlan {
                    name: b".".to_vec(),
                    target: root + index,
                },
                DirEntryPlan {
                    name: b"..".to_vec(),
                    target: root + parent,
                },
            ];
            dir_entries.extend(entries.iter().map(|entry| DirEntryPlan {
                name: entry.name.clone(),
                target: root + entry.node,
            }));
            InodePlan::directory(attributes, 0, DirPlan::new(geometry, dir_entries))
        }
    })
}

/// The directory that names each node (the last one for a hard-linked file, which has no
/// single parent); the root is its own parent, as its `..` says.
fn parents(tree: &SourceTree) -> Vec<usize> {
    let mut parents = vec![0; tree.nodes.len()];
    for (index, node) in tree.nodes.iter().enumerate() {
        if let SourceKind::Directory { entries } = &node.kind {
            for entry in entries {
                parents[entry.node] = index;
            }
        }
    }
    parents
}
