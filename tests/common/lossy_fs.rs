//! A test-only FUSE file system, held in memory, that a power cut reverts to what was made
//! durable: the harness of `tests/power_cut.rs`. `kill -9` keeps the kernel's page cache, so a
//! missing fsync never shows in a kill test; here it does.
//!
//! # What survives a cut
//!
//! - **File contents** (the bytes and the length, whatever changed them: write, truncate,
//!   fallocate) are durable only when `fsync` or `fdatasync` is called on that file. Each file
//!   keeps two versions: the current one, which every read sees, and the one the last sync made
//!   durable. A cut puts the durable version back, in every file at once. A file never synced is
//!   empty after a cut. Everything written since the last sync is lost, never a part of it: the
//!   most a real disk may lose, though not the torn mix of old and new pages it may also leave.
//! - **Directory operations** (create, mkdir, link, unlink, rmdir, rename) are durable as soon as
//!   they return, as on a file system mounted with `dirsync`; `fsyncdir` has nothing left to make
//!   durable. So this file system does not catch a missing directory fsync, but it does
//!   catch the classic "write a temporary file, rename it over the real one, never fsync the file":
//!   after a cut the new name holds the renamed file's durable content, which is empty.
//!   To show what a stricter file system could lose, a cut still reports every directory change
//!   never followed by an `fsyncdir` of its directory ([`CutReport::names_without_fsyncdir`]).
//! - Other attributes (mode, owner, times) are not modelled: they stay as they are.
//!
//! # Keeping the kernel from serving what a cut dropped
//!
//! Every open file is opened with `FOPEN_DIRECT_IO`, so the kernel keeps no page cache of file data
//! (every read and write reaches this file system), and a cut happens only while the file system is
//! unmounted ([`LossyMount::power_cut`]: unmount, revert, mount again), so no cached attribute or
//! directory entry outlives it. Memory-mapping a file is therefore refused; RocksDB does not map
//! files unless told to. POSIX locks (RocksDB's `LOCK` file) are left to the kernel, which keeps
//! them locally because the file system does not ask for `FUSE_POSIX_LOCKS`.
//!
//! The mount needs root (the pure-Rust mount of `fuser` calls mount(2) itself) and `/dev/fuse`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may cache attributes and directory entries. Safe because nothing changes
/// the file system behind the kernel's back while it is mounted (a cut unmounts first).
const TTL: Duration = Duration::from_secs(1);
/// Size of the shared pieces a file's content is made of: a sync shares them, a later write
/// copies only the pieces it touches.
const PAGE: usize = 64 * 1024;
const BLOCK: u64 = 4096;
/// The size `statfs` reports: far above the 256 MiB the server wants free before it appends.
const CAPACITY_BYTES: u64 = 64 << 30;
const MAX_INODES: u64 = 1 << 20;

// ----- contents --------------------------------------------------------------------------------

/// The bytes of a file, in shared pages. Invariant: every byte of a page at or past `len` is zero,
/// so growing the file (by a write past the end, a truncate or a fallocate) reads zeros.
#[derive(Clone, Default)]
struct Content {
    pages: Vec<Arc<Vec<u8>>>,
    len: u64,
}

impl Content {
    fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = self.len.min(offset + size as u64);
        let mut bytes = Vec::with_capacity((end - offset) as usize);
        let mut position = offset;
        while position < end {
            let page = (position / PAGE as u64) as usize;
            let within = (position % PAGE as u64) as usize;
            let take = ((end - position) as usize).min(PAGE - within);
            bytes.extend_from_slice(&self.pages[page][within..within + take]);
            position += take as u64;
        }
        bytes
    }

    /// Pages to cover `len` bytes, new ones zeroed.
    fn cover(&mut self, len: u64) {
        let needed = len.div_ceil(PAGE as u64) as usize;
        while self.pages.len() < needed {
            self.pages.push(Arc::new(vec![0; PAGE]));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        self.cover(end);
        let mut position = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = (position / PAGE as u64) as usize;
            let within = (position % PAGE as u64) as usize;
            let take = rest.len().min(PAGE - within);
            Arc::make_mut(&mut self.pages[page])[within..within + take].copy_from_slice(&rest[..take]);
            position += take as u64;
            rest = &rest[take..];
        }
        self.len = self.len.max(end);
    }

    /// Zeroes `[offset, end)` within the current length.
    fn zero(&mut self, offset: u64, end: u64) {
        let end = end.min(self.len);
        if offset < end {
            self.write(offset, &vec![0; (end - offset) as usize]);
        }
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.pages.truncate(len.div_ceil(PAGE as u64) as usize);
            let within = (len % PAGE as u64) as usize;
            if within != 0 {
                if let Some(last) = self.pages.last_mut() {
                    Arc::make_mut(last)[within..].fill(0);
                }
            }
        } else {
            self.cover(len);
        }
        self.len = len;
    }

    /// How many byte positions differ between two versions (a byte only one of them has counts).
    fn differing_bytes(&self, other: &Content) -> u64 {
        let len = self.len.max(other.len);
        let mut differing = 0;
        for page in 0..len.div_ceil(PAGE as u64) as usize {
            let start = page as u64 * PAGE as u64;
            let end = (start + PAGE as u64).min(len);
            match (self.pages.get(page), other.pages.get(page)) {
                (Some(mine), Some(theirs)) if Arc::ptr_eq(mine, theirs) && end <= self.len.min(other.len) => {}
                _ => {
                    for position in start..end {
                        if self.byte(position) != other.byte(position) {
                            differing += 1;
                        }
                    }
                }
            }
        }
        differing
    }

    /// The byte at `position`, None past the end.
    fn byte(&self, position: u64) -> Option<u8> {
        if position < self.len {
            Some(self.pages[(position / PAGE as u64) as usize][(position % PAGE as u64) as usize])
        } else {
            None
        }
    }
}

// ----- inodes ----------------------------------------------------------------------------------

enum Node {
    File {
        /// What reads see.
        current: Content,
        /// What the last fsync made durable: what a cut leaves.
        durable: Content,
    },
    Directory {
        entries: BTreeMap<OsString, u64>,
        parent: u64,
    },
}

struct Inode {
    node: Node,
    perm: u16,
    uid: u32,
    gid: u32,
    /// Names that refer to it (a directory: 1 while it has its name).
    links: u32,
    /// Open handles (files only): an unlinked file lives on until the last is released.
    open: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Inode {
    fn new(node: Node, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode { node, perm, uid, gid, links: 1, open: 0, atime: now, mtime: now, ctime: now }
    }

    fn kind(&self) -> FileType {
        match self.node {
            Node::File { .. } => FileType::RegularFile,
            Node::Directory { .. } => FileType::Directory,
        }
    }

    fn size(&self) -> u64 {
        match &self.node {
            Node::File { current, .. } => current.len,
            Node::Directory { entries, .. } => entries.len() as u64,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = self.size();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.kind(),
            perm: self.perm,
            nlink: match self.node {
                Node::File { .. } => self.links,
                Node::Directory { .. } => 2,
            },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        }
    }
}

/// Every inode, by number (1 is the root), and the listings of open directories.
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    listings: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_handle: u64,
    /// Names added, removed or replaced in each directory since its last `fsyncdir` (only
    /// reported: directory operations are durable at once here).
    names_not_synced: BTreeMap<u64, BTreeSet<OsString>>,
}

type Result<T> = std::result::Result<T, Errno>;

impl State {
    fn new() -> State {
        let root = Inode::new(Node::Directory { entries: BTreeMap::new(), parent: 1 }, 0o755, 0, 0);
        State {
            inodes: HashMap::from([(1, root)]),
            next_ino: 2,
            listings: HashMap::new(),
            next_handle: 1,
            names_not_synced: BTreeMap::new(),
        }
    }

    fn inode(&self, ino: u64) -> Result<&Inode> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, directory: u64) -> Result<&BTreeMap<OsString, u64>> {
        match &self.inode(directory)?.node {
            Node::Directory { entries, .. } => Ok(entries),
            Node::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, directory: u64) -> Result<&mut BTreeMap<OsString, u64>> {
        match &mut self.inode_mut(directory)?.node {
            Node::Directory { entries, .. } => Ok(entries),
            Node::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn lookup(&self, directory: u64, name: &OsStr) -> Result<u64> {
        self.entries(directory)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn file(&mut self, ino: u64) -> Result<(&mut Content, &mut Content)> {
        match &mut self.inode_mut(ino)?.node {
            Node::File { current, durable } => Ok((current, durable)),
            Node::Directory { .. } => Err(Errno::EISDIR),
        }
    }

    /// Adds a new inode under `parent` as `name`.
    fn add(&mut self, parent: u64, name: &OsStr, node: Node, perm: u16, request: &Request) -> Result<u64> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(node, perm, request.uid(), request.gid()));
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        self.changed(parent, name);
        Ok(ino)
    }

    /// Records that `name` of `directory` changed (for the report of a cut).
    fn changed(&mut self, directory: u64, name: &OsStr) {
        self.names_not_synced.entry(directory).or_default().insert(name.to_os_string());
        self.touch(directory);
    }

    fn touch(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            inode.mtime = now;
            inode.ctime = now;
        }
    }

    /// One name less for `ino`; the inode goes once no name and no open handle is left.
    fn unlinked(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.links = inode.links.saturating_sub(1);
            inode.ctime = SystemTime::now();
            if inode.links == 0 && inode.open == 0 {
                self.inodes.remove(&ino);
            }
        }
    }

    /// Removes the entry `name` of `parent`, which must be a file (`directory` false) or an empty
    /// directory (`directory` true).
    fn remove(&mut self, parent: u64, name: &OsStr, directory: bool) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        match (&self.inode(ino)?.node, directory) {
            (Node::Directory { entries, .. }, true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Node::Directory { .. }, false) => return Err(Errno::EISDIR),
            (Node::File { .. }, true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.changed(parent, name);
        self.unlinked(ino);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        let target = self.entries(new_parent)?.get(new_name).copied();
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let other = target.ok_or(Errno::ENOENT)?;
            self.entries_mut(parent)?.insert(name.to_os_string(), other);
            self.entries_mut(new_parent)?.insert(new_name.to_os_string(), ino);
            self.set_parent(other, parent);
            self.set_parent(ino, new_parent);
            self.changed(parent, name);
            self.changed(new_parent, new_name);
            return Ok(());
        }
        if let Some(other) = target {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if other == ino {
                return Ok(());
            }
            let moving_directory = matches!(self.inode(ino)?.node, Node::Directory { .. });
            match &self.inode(other)?.node {
                Node::Directory { entries, .. } if moving_directory && !entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                Node::Directory { .. } if !moving_directory => return Err(Errno::EISDIR),
                Node::File { .. } if moving_directory => return Err(Errno::ENOTDIR),
                _ => {}
            }
            self.unlinked(other);
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?.insert(new_name.to_os_string(), ino);
        self.set_parent(ino, new_parent);
        self.changed(parent, name);
        self.changed(new_parent, new_name);
        Ok(())
    }

    fn set_parent(&mut self, ino: u64, new_parent: u64) {
        if let Some(Inode { node: Node::Directory { parent, .. }, .. }) = self.inodes.get_mut(&ino) {
            *parent = new_parent;
        }
    }

    /// Every file with its path (sorted), and the path of every directory ("" for the root).
    fn walk(&self) -> (Vec<(String, u64)>, HashMap<u64, String>) {
        let mut files = Vec::new();
        let mut directories = HashMap::from([(1, String::new())]);
        let mut pending = vec![(String::new(), 1u64)];
        while let Some((path, ino)) = pending.pop() {
            let Ok(entries) = self.entries(ino) else { continue };
            for (name, &child) in entries {
                let child_path = format!("{path}/{}", name.to_string_lossy());
                match self.inodes.get(&child).map(|inode| &inode.node) {
                    Some(Node::File { .. }) => files.push((child_path, child)),
                    Some(Node::Directory { .. }) => {
                        directories.insert(child, child_path.clone());
                        pending.push((child_path, child));
                    }
                    None => {}
                }
            }
        }
        files.sort();
        (files, directories)
    }

    /// The power cut: every file back to its durable content. Only while unmounted.
    fn cut(&mut self) -> CutReport {
        let (files, directories) = self.walk();
        let mut names_without_fsyncdir: Vec<String> = std::mem::take(&mut self.names_not_synced)
            .into_iter()
            .filter_map(|(directory, names)| Some((directories.get(&directory)?, names)))
            .flat_map(|(path, names)| names.into_iter().map(move |name| format!("{path}/{}", name.to_string_lossy())))
            .collect();
        names_without_fsyncdir.sort();
        let mut reverted = Vec::new();
        for (path, ino) in files {
            if let Ok((current, durable)) = self.file(ino) {
                let differing = current.differing_bytes(durable);
                if differing > 0 {
                    reverted.push(Reverted { path, current_len: current.len, durable_len: durable.len, differing });
                }
                *current = durable.clone();
            }
        }
        // Nothing is open any more: files that had lost their last name are gone now.
        self.listings.clear();
        for inode in self.inodes.values_mut() {
            inode.open = 0;
        }
        self.inodes.retain(|_, inode| inode.links > 0);
        CutReport { reverted, names_without_fsyncdir }
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| match &inode.node {
                Node::File { current, durable } => current.len.max(durable.len),
                Node::Directory { .. } => BLOCK,
            })
            .sum()
    }
}

/// What a power cut dropped.
#[derive(Debug)]
pub struct CutReport {
    pub reverted: Vec<Reverted>,
    /// Paths whose directory entry changed (created, removed, renamed to or from) and whose
    /// directory was not fsynced after: kept here, at risk on a file system that makes directory
    /// operations durable only at `fsyncdir`.
    pub names_without_fsyncdir: Vec<String>,
}

/// One file whose current content differed from its durable content at the cut.
#[derive(Debug)]
pub struct Reverted {
    /// Path from the root of the file system, starting with '/'.
    pub path: String,
    pub current_len: u64,
    pub durable_len: u64,
    /// Byte positions that differed (a byte only one version has counts).
    pub differing: u64,
}

impl CutReport {
    pub fn differing_bytes(&self) -> u64 {
        self.reverted.iter().map(|file| file.differing).sum()
    }
}

impl fmt::Display for CutReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "the cut reverted {} file(s), {} byte(s) that had not been synced:",
            self.reverted.len(),
            self.differing_bytes()
        )?;
        for file in &self.reverted {
            writeln!(
                formatter,
                "  {}: {} bytes → {} bytes durable ({} differed)",
                file.path, file.current_len, file.durable_len, file.differing
            )?;
        }
        if !self.names_without_fsyncdir.is_empty() {
            writeln!(
                formatter,
                "kept, though their directory was not fsynced after the change: {}",
                self.names_without_fsyncdir.join(", ")
            )?;
        }
        Ok(())
    }
}

// ----- the FUSE operations ---------------------------------------------------------------------

struct LossyFs {
    state: Arc<Mutex<State>>,
}

impl LossyFs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers an entry reply with the inode `result` names.
    fn entry(&self, state: &State, result: Result<u64>, reply: ReplyEntry) {
        match result.and_then(|ino| Ok((ino, state.inode(ino)?))) {
            Ok((ino, inode)) => reply.entry(&TTL, &inode.attr(ino), Generation(0)),
            Err(error) => reply.error(error),
        }
    }
}

fn empty(result: Result<()>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(error),
    }
}

fn permissions(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

fn time(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn new_file() -> Node {
    Node::File { current: Content::default(), durable: Content::default() }
}

impl Filesystem for LossyFs {
    fn lookup(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        let result = state.lookup(parent.0, name);
        self.entry(&state, result, reply);
    }

    fn getattr(&self, _request: &Request, ino: INodeNo, _handle: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().inode(ino.0) {
            Ok(inode) => reply.attr(&TTL, &inode.attr(ino.0)),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _request: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _handle: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let result = (|| -> Result<FileAttr> {
            if let Some(size) = size {
                // Like a write: durable only at the next fsync.
                state.file(ino.0)?.0.set_len(size);
                state.touch(ino.0);
            }
            let inode = state.inode_mut(ino.0)?;
            if let Some(mode) = mode {
                inode.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                inode.uid = uid;
            }
            if let Some(gid) = gid {
                inode.gid = gid;
            }
            if let Some(atime) = atime {
                inode.atime = time(atime);
            }
            if let Some(mtime) = mtime {
                inode.mtime = time(mtime);
            }
            inode.ctime = SystemTime::now();
            Ok(inode.attr(ino.0))
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn mknod(
        &self,
        request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        let mut state = self.state();
        let result = state.add(parent.0, name, new_file(), permissions(mode, umask), request);
        self.entry(&state, result, reply);
    }

    fn mkdir(&self, request: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut state = self.state();
        let directory = Node::Directory { entries: BTreeMap::new(), parent: parent.0 };
        let result = state.add(parent.0, name, directory, permissions(mode, umask), request);
        self.entry(&state, result, reply);
    }

    fn unlink(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.state().remove(parent.0, name, false), reply);
    }

    fn rmdir(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.state().remove(parent.0, name, true), reply);
    }

    fn rename(
        &self,
        _request: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(self.state().rename(parent.0, name, new_parent.0, new_name, flags), reply);
    }

    fn link(&self, _request: &Request, ino: INodeNo, new_parent: INodeNo, new_name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        let result = (|| -> Result<u64> {
            if !matches!(state.inode(ino.0)?.node, Node::File { .. }) {
                return Err(Errno::EPERM);
            }
            if state.entries(new_parent.0)?.contains_key(new_name) {
                return Err(Errno::EEXIST);
            }
            state.entries_mut(new_parent.0)?.insert(new_name.to_os_string(), ino.0);
            state.changed(new_parent.0, new_name);
            let inode = state.inode_mut(ino.0)?;
            inode.links += 1;
            inode.ctime = SystemTime::now();
            Ok(ino.0)
        })();
        self.entry(&state, result, reply);
    }

    fn open(&self, _request: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let result = (|| -> Result<()> {
            state.file(ino.0)?;
            state.inode_mut(ino.0)?.open += 1;
            Ok(())
        })();
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _request: &Request,
        ino: INodeNo,
        _handle: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().file(ino.0) {
            Ok((current, _)) => reply.data(&current.read(offset, size as usize)),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _request: &Request,
        ino: INodeNo,
        _handle: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        match state.file(ino.0) {
            Ok((current, _)) => {
                current.write(offset, data);
                state.touch(ino.0);
                reply.written(data.len() as u32);
            }
            Err(error) => reply.error(error),
        }
    }

    fn flush(&self, _request: &Request, _ino: INodeNo, _handle: FileHandle, _owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _request: &Request,
        ino: INodeNo,
        _handle: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if let Some(inode) = state.inodes.get_mut(&ino.0) {
            inode.open = inode.open.saturating_sub(1);
            if inode.open == 0 && inode.links == 0 {
                state.inodes.remove(&ino.0);
            }
        }
        reply.ok();
    }

    /// The one place file data becomes durable (fsync and fdatasync alike: the length is data).
    fn fsync(&self, _request: &Request, ino: INodeNo, _handle: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut state = self.state();
        empty(
            state.file(ino.0).map(|(current, durable)| {
                *durable = current.clone();
            }),
            reply,
        );
    }

    fn opendir(&self, _request: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let listing = (|| -> Result<Vec<(u64, FileType, OsString)>> {
            let Node::Directory { entries, parent } = &state.inode(ino.0)?.node else {
                return Err(Errno::ENOTDIR);
            };
            let mut listing = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (*parent, FileType::Directory, OsString::from("..")),
            ];
            for (name, &child) in entries {
                if let Some(inode) = state.inodes.get(&child) {
                    listing.push((child, inode.kind(), name.clone()));
                }
            }
            Ok(listing)
        })();
        match listing {
            Ok(listing) => {
                let handle = state.next_handle;
                state.next_handle += 1;
                state.listings.insert(handle, listing);
                reply.opened(FileHandle(handle), FopenFlags::empty());
            }
            Err(error) => reply.error(error),
        }
    }

    fn readdir(&self, _request: &Request, _ino: INodeNo, handle: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = self.state();
        let Some(listing) = state.listings.get(&handle.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (index, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            // The offset given with an entry is where the next readdir resumes.
            if reply.add(INodeNo(*ino), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _request: &Request, _ino: INodeNo, handle: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.state().listings.remove(&handle.0);
        reply.ok();
    }

    /// Directory operations are durable already; only noted for the report of a cut.
    fn fsyncdir(&self, _request: &Request, ino: INodeNo, _handle: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.state().names_not_synced.remove(&ino.0);
        reply.ok();
    }

    fn statfs(&self, _request: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let state = self.state();
        let blocks = CAPACITY_BYTES / BLOCK;
        let free = blocks.saturating_sub(state.used_bytes().div_ceil(BLOCK));
        let free_inodes = MAX_INODES.saturating_sub(state.inodes.len() as u64);
        reply.statfs(blocks, free, free, MAX_INODES, free_inodes, BLOCK as u32, 255, BLOCK as u32);
    }

    fn access(&self, _request: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        empty(self.state().inode(ino.0).map(|_| ()), reply);
    }

    fn create(
        &self,
        request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let result = (|| -> Result<FileAttr> {
            let ino = match state.lookup(parent.0, name) {
                Ok(_) if flags & libc::O_EXCL != 0 => return Err(Errno::EEXIST),
                Ok(ino) => {
                    let (current, _) = state.file(ino)?;
                    if flags & libc::O_TRUNC != 0 {
                        current.set_len(0);
                    }
                    ino
                }
                Err(_) => state.add(parent.0, name, new_file(), permissions(mode, umask), request)?,
            };
            let inode = state.inode_mut(ino)?;
            inode.open += 1;
            Ok(inode.attr(ino))
        })();
        match result {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(error) => reply.error(error),
        }
    }

    fn fallocate(
        &self,
        _request: &Request,
        ino: INodeNo,
        _handle: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = state.file(ino.0).and_then(|(current, _)| {
            let end = offset + length;
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            match mode & !libc::FALLOC_FL_KEEP_SIZE {
                // Preallocation: nothing to reserve in memory; without KEEP_SIZE the file grows.
                0 => {}
                libc::FALLOC_FL_PUNCH_HOLE if keep_size => current.zero(offset, end),
                libc::FALLOC_FL_ZERO_RANGE => current.zero(offset, end),
                _ => return Err(Errno::EOPNOTSUPP),
            }
            if !keep_size && end > current.len {
                current.set_len(end);
            }
            Ok(())
        });
        empty(result, reply);
    }
}

// ----- mounting --------------------------------------------------------------------------------

/// A mounted lossy file system. Unmounted on drop (before its temporary directory, if it owns
/// one, is removed).
pub struct LossyMount {
    mount_point: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    _directory: Option<tempfile::TempDir>,
}

impl LossyMount {
    /// Mounts a new, empty lossy file system on a fresh temporary directory.
    pub fn mount_temporary() -> LossyMount {
        let directory = tempfile::TempDir::with_prefix("fleetlog-lossy-").expect("create a mount point");
        let mut mount = LossyMount::mount(directory.path());
        mount._directory = Some(directory);
        mount
    }

    /// Mounts a new, empty lossy file system on `mount_point`, an existing directory.
    pub fn mount(mount_point: &Path) -> LossyMount {
        let mount_point =
            mount_point.canonicalize().unwrap_or_else(|error| panic!("mount point {}: {error}", mount_point.display()));
        let mut mount =
            LossyMount { mount_point, state: Arc::new(Mutex::new(State::new())), session: None, _directory: None };
        mount.start();
        mount
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The power cut: unmounts (every process using the file system must have exited: kill them
    /// first), reverts every file to what was last made durable, and mounts the result again.
    pub fn power_cut(&mut self) -> CutReport {
        self.stop();
        let report = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).cut();
        self.start();
        report
    }

    fn start(&mut self) {
        assert!(self.session.is_none(), "already mounted");
        let mut config = Config::default();
        config.mount_options =
            vec![MountOption::FSName("lossyfs".into()), MountOption::DefaultPermissions, MountOption::NoAtime];
        config.n_threads = Some(2);
        let filesystem = LossyFs { state: self.state.clone() };
        let session = fuser::spawn_mount(filesystem, &self.mount_point, &config).unwrap_or_else(|error| {
            panic!(
                "mounting the lossy FUSE file system on {} failed: {error} (this needs root and /dev/fuse)",
                self.mount_point.display()
            )
        });
        self.session = Some(session);
    }

    /// Unmounts and waits for the session to end. A busy mount (a process still inside) is
    /// retried for a few seconds, then detached lazily so that nothing is left mounted.
    fn stop(&mut self) {
        let Some(session) = self.session.take() else { return };
        let path = std::ffi::CString::new(self.mount_point.as_os_str().as_encoded_bytes()).expect("mount point path");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EBUSY) || Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                panic!("unmounting the lossy file system at {} failed: {error}", self.mount_point.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Unmounted: the session's threads see the device close and end. A thread reading the
        // device as the kernel tears the connection down may see it aborted or gone instead of
        // closed (ECONNABORTED, ENODEV): that is the same end, reached by another path.
        if let Err(error) = session.join() {
            let torn_down = matches!(error.raw_os_error(), Some(libc::ECONNABORTED) | Some(libc::ENODEV));
            if !torn_down {
                panic!("the lossy file system's session ended with an error: {error}");
            }
        }
    }
}

impl Drop for LossyMount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Never panic twice; leave nothing mounted.
            if let Some(session) = self.session.take() {
                let path = std::ffi::CString::new(self.mount_point.as_os_str().as_encoded_bytes()).unwrap_or_default();
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                drop(session);
            }
        } else {
            self.stop();
        }
    }
}
