//! A container's user namespace, the shim's side: what the spec asks (a new namespace with its
//! ID mappings, or a pod's by path), and what the privileged side does from outside for a
//! process in it before the process goes on.
//!
//! The order, as runc's: the process gets into the namespace first (a new one is created by
//! the same clone or unshare as its other namespaces, so that they are owned by it; a pod's is
//! joined before it creates the others), says so on its sync socket and waits. The shim then
//! writes its `uid_map` and `gid_map` (setgroups stays allowed: a privileged writer needs no
//! `deny`), puts an exec in its cgroup and sets the OOM score, which root in the namespace could
//! not do (the cgroup and `/proc` files belong to the host's root), and answers. Only then does
//! the process execute the runner (with its capabilities in the namespace, which an unmapped
//! process would lose on execve) and, much later, read its module.
use crate::protocol::TIMEOUT;
use anyhow::{bail, ensure, Context, Result};
use nix::unistd::Pid;
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType, User};
use serde::{Deserialize, Serialize};
use nix::sched::CloneFlags;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag};
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The most ranges a `uid_map` or `gid_map` takes (Linux 4.15 and later).
pub const MAX_RANGES: usize = 340;

/// The user namespace of a container: a new one with its mappings, or the one at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    pub path: Option<PathBuf>,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
}

impl UserNamespace {
    /// The user namespace `linux` asks for, if any, refusing in one line what the kernel would
    /// refuse later or what makes no sense: mappings without a namespace, a new namespace
    /// without both mappings, too many, empty, overflowing or overlapping ranges, and a process
    /// user the mappings leave out.
    pub fn from_spec(linux: Option<&Linux>, user: Option<&User>) -> Result<Option<UserNamespace>> {
        let entry = linux.and_then(|l| l.namespaces().as_ref()).into_iter().flatten().find(|ns| ns.typ() == LinuxNamespaceType::User);
        let uid_mappings = linux.and_then(|l| l.uid_mappings().clone()).unwrap_or_default();
        let gid_mappings = linux.and_then(|l| l.gid_mappings().clone()).unwrap_or_default();
        let Some(entry) = entry else {
            ensure!(uid_mappings.is_empty() && gid_mappings.is_empty(), "ID mappings (linux.uidMappings, linux.gidMappings) need a user namespace (linux.namespaces: user)");
            return Ok(None);
        };
        let path = entry.path().clone();
        if path.is_none() {
            ensure!(!uid_mappings.is_empty() && !gid_mappings.is_empty(), "a new user namespace needs both linux.uidMappings and linux.gidMappings");
        }
        check_ranges("linux.uidMappings", &uid_mappings)?;
        check_ranges("linux.gidMappings", &gid_mappings)?;
        if path.is_none() {
            // The process becomes root in the namespace to build its rootfs, as runc's does.
            ensure!(maps(&uid_mappings, 0) && maps(&gid_mappings, 0), "a new user namespace must map uid and gid 0 (linux.uidMappings, linux.gidMappings)");
        }
        if let (None, Some(user)) = (&path, user) {
            ensure!(maps(&uid_mappings, user.uid()), "process.user.uid {} is not mapped by linux.uidMappings", user.uid());
            ensure!(maps(&gid_mappings, user.gid()), "process.user.gid {} is not mapped by linux.gidMappings", user.gid());
        }
        Ok(Some(UserNamespace { path, uid_mappings, gid_mappings }))
    }

    /// Whether the shim creates the namespace (and so writes its mappings).
    pub fn is_new(&self) -> bool {
        self.path.is_none()
    }

    /// The host uid that `uid` in the namespace is, when the shim knows the mappings.
    pub fn host_uid(&self, uid: u32) -> Option<u32> {
        self.uid_mappings
            .iter()
            .find(|m| uid.checked_sub(m.container_id()).is_some_and(|off| off < m.size()))
            .map(|m| m.host_id() + (uid - m.container_id()))
    }
}

fn maps(mappings: &[LinuxIdMapping], id: u32) -> bool {
    mappings.iter().any(|m| id.checked_sub(m.container_id()).is_some_and(|off| off < m.size()))
}

pub(super) fn check_ranges(field: &str, mappings: &[LinuxIdMapping]) -> Result<()> {
    ensure!(mappings.len() <= MAX_RANGES, "{field} has {} ranges; the kernel takes at most {MAX_RANGES}", mappings.len());
    for m in mappings {
        ensure!(m.size() > 0, "{field}: the range at container ID {} has size 0", m.container_id());
        let fits = |start: u32| u64::from(start) + u64::from(m.size()) <= u64::from(u32::MAX);
        ensure!(fits(m.container_id()) && fits(m.host_id()), "{field}: the range {} {} {} goes past the last ID", m.container_id(), m.host_id(), m.size());
    }
    for side in [LinuxIdMapping::container_id as fn(&LinuxIdMapping) -> u32, LinuxIdMapping::host_id] {
        let mut ranges: Vec<(u32, u32)> = mappings.iter().map(|m| (side(m), m.size())).collect();
        ranges.sort();
        if let Some(w) = ranges.windows(2).find(|w| w[0].0 + w[0].1 > w[1].0) {
            bail!("{field}: the ranges starting at {} and {} overlap", w[0].0, w[1].0);
        }
    }
    Ok(())
}

/// The ID mappings of an idmapped mount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub uids: Vec<LinuxIdMapping>,
    pub gids: Vec<LinuxIdMapping>,
}

impl IdMap {
    /// A user namespace with these mappings, held by its fd: what `MOUNT_ATTR_IDMAP` takes. Its
    /// process, made only to hold the mappings, is gone when this returns.
    pub fn user_namespace(&self) -> Result<OwnedFd> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
        let (read_raw, write_raw) = (read.as_raw_fd(), write.as_raw_fd());
        let mut stack = vec![0u8; 16 * 1024];
        // Raw calls only: the shim has threads. It waits for the pipe's end, then leaves. No exit
        // signal, so the shim's reaper (which waits for SIGCHLD children) leaves it to us.
        let hold = Box::new(move || -> isize {
            let mut byte = 0u8;
            unsafe {
                libc::close(write_raw);
                libc::read(read_raw, (&raw mut byte).cast(), 1)
            };
            0
        });
        let pid = unsafe { nix::sched::clone(hold, &mut stack, CloneFlags::CLONE_NEWUSER, None) }.context("creating a user namespace for an idmapped mount")?;
        drop(read);
        let opened = (|| -> Result<OwnedFd> {
            std::fs::write(format!("/proc/{pid}/uid_map"), map_text(&self.uids)).context("writing its uid_map")?;
            std::fs::write(format!("/proc/{pid}/gid_map"), map_text(&self.gids)).context("writing its gid_map")?;
            Ok(std::fs::File::open(format!("/proc/{pid}/ns/user")).context("opening it")?.into())
        })();
        drop(write);
        let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
        opened.context("making the user namespace of an idmapped mount")
    }
}

/// A mapping as `/proc/PID/uid_map` takes it: one `inside outside count` line per range.
fn map_text(mappings: &[LinuxIdMapping]) -> String {
    mappings.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
}

/// What the shim does for a process in a user namespace before it lets it go on.
#[derive(Default)]
pub struct Outside<'a> {
    /// The mappings to write, for a namespace the process created.
    pub mappings: Option<&'a UserNamespace>,
    /// The cgroup to put the process in (relative to each hierarchy's root).
    pub cgroup: Option<&'a str>,
    pub oom_score_adj: Option<i32>,
}

/// The shim's half of the handshake on `sync`: waits for the process `pid` to be in its user
/// namespace, does `outside` for it, and lets it go on (it then becomes root in the namespace)
/// with the mount trees `trees` makes for it then (see [`crate::protocol::FIRST_MOUNT_FD`]).
pub fn release(pid: Pid, sync: &UnixStream, outside: &Outside, trees: impl FnOnce() -> Result<Vec<OwnedFd>>) -> Result<()> {
    let mut sync = sync;
    sync.set_read_timeout(Some(TIMEOUT))?;
    let mut byte = [0u8];
    sync.read_exact(&mut byte).with_context(|| format!("process {pid} did not get into its user namespace"))?;
    if let Some(ns) = outside.mappings {
        std::fs::write(format!("/proc/{pid}/uid_map"), map_text(&ns.uid_mappings)).context("writing the uid_map")?;
        std::fs::write(format!("/proc/{pid}/gid_map"), map_text(&ns.gid_mappings)).context("writing the gid_map")?;
    }
    if let Some(path) = outside.cgroup {
        super::cgroup::add(path, pid)?;
    }
    if let Some(score) = outside.oom_score_adj {
        std::fs::write(format!("/proc/{pid}/oom_score_adj"), score.to_string()).with_context(|| format!("setting oom_score_adj to {score}"))?;
    }
    let trees = trees()?;
    let raw: Vec<RawFd> = trees.iter().map(|t| t.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs = if raw.is_empty() { &[][..] } else { &rights[..] };
    sendmsg::<()>(sync.as_raw_fd(), &[IoSlice::new(&[1])], cmsgs, MsgFlags::MSG_NOSIGNAL, None).with_context(|| format!("releasing process {pid} in its user namespace"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(json: serde_json::Value) -> Linux {
        serde_json::from_value(json).unwrap()
    }

    fn user(uid: u32, gid: u32) -> User {
        serde_json::from_value(serde_json::json!({"uid": uid, "gid": gid})).unwrap()
    }

    fn from(json: serde_json::Value) -> Result<Option<UserNamespace>> {
        UserNamespace::from_spec(Some(&linux(json)), Some(&user(0, 0)))
    }

    fn range(container: u32, host: u32, size: u32) -> serde_json::Value {
        serde_json::json!({"containerID": container, "hostID": host, "size": size})
    }

    #[test]
    fn a_new_namespace_takes_its_mappings() {
        let ns = from(serde_json::json!({
            "namespaces": [{"type": "user"}, {"type": "mount"}],
            "uidMappings": [range(0, 100000, 65536)], "gidMappings": [range(0, 200000, 65536)]
        }))
        .unwrap()
        .unwrap();
        assert!(ns.is_new());
        assert_eq!(ns.host_uid(0), Some(100000));
        assert_eq!(ns.host_uid(1000), Some(101000));
        assert_eq!(ns.host_uid(65536), None);
        assert_eq!(map_text(&ns.gid_mappings), "0 200000 65536\n");
    }

    #[test]
    fn a_pods_namespace_is_joined_by_path() {
        let ns = from(serde_json::json!({
            "namespaces": [{"type": "user", "path": "/proc/42/ns/user"}],
            "uidMappings": [range(0, 65536, 65536)], "gidMappings": [range(0, 65536, 65536)]
        }))
        .unwrap()
        .unwrap();
        assert!(!ns.is_new());
        assert_eq!(ns.path, Some(PathBuf::from("/proc/42/ns/user")));
        assert!(from(serde_json::json!({"namespaces": [{"type": "user", "path": "/proc/42/ns/user"}]})).unwrap().is_some(), "a joined namespace has its own mappings");
    }

    #[test]
    fn the_process_user_must_be_mapped() {
        let linux = linux(serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": [range(0, 1000, 10)], "gidMappings": [range(0, 1000, 100)]}));
        let err = UserNamespace::from_spec(Some(&linux), Some(&user(10, 0))).unwrap_err().to_string();
        assert_eq!(err, "process.user.uid 10 is not mapped by linux.uidMappings");
        let err = UserNamespace::from_spec(Some(&linux), Some(&user(0, 100))).unwrap_err().to_string();
        assert_eq!(err, "process.user.gid 100 is not mapped by linux.gidMappings");
        assert!(UserNamespace::from_spec(Some(&linux), Some(&user(9, 99))).is_ok());
    }

    #[test]
    fn no_user_namespace_is_none() {
        assert_eq!(from(serde_json::json!({"namespaces": [{"type": "pid"}]})).unwrap(), None);
        assert_eq!(UserNamespace::from_spec(None, None).unwrap(), None);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_in_one_line() {
        let many: Vec<_> = (0..341).map(|i| range(i, 100000 + i, 1)).collect();
        let cases = [
            (serde_json::json!({"uidMappings": [range(0, 1000, 1)]}), "need a user namespace (linux.namespaces: user)"),
            (serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": [range(0, 1000, 1)]}), "needs both linux.uidMappings and linux.gidMappings"),
            (serde_json::json!({"namespaces": [{"type": "user"}]}), "needs both"),
            (serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": many, "gidMappings": [range(0, 1, 1)]}), "linux.uidMappings has 341 ranges; the kernel takes at most 340"),
            (serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": [range(0, 1, 0)], "gidMappings": [range(0, 1, 1)]}), "has size 0"),
            (serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": [range(0, 4294967000u32, 1000)], "gidMappings": [range(0, 1, 1)]}), "goes past the last ID"),
            (serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": [range(0, 1000, 10), range(5, 2000, 10)], "gidMappings": [range(0, 1, 1)]}), "linux.uidMappings: the ranges starting at 0 and 5 overlap"),
            (serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": [range(0, 1000, 1)], "gidMappings": [range(0, 1, 10), range(10, 5, 1)]}), "linux.gidMappings: the ranges starting at 1 and 5 overlap"),
            (serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": [range(1, 1000, 1)], "gidMappings": [range(0, 1, 1)]}), "must map uid and gid 0"),
        ];
        for (json, why) in cases {
            let err = format!("{:#}", from(json.clone()).unwrap_err());
            assert!(err.contains(why) && !err.contains('\n'), "{json}: {err}");
        }
    }
}
