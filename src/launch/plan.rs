//! The launch plan: everything a container's init process needs, prepared once at create time
//! from the bundle's `config.json` and handed to the process as JSON.
use super::cgroup;
use super::userns::{check_ranges, IdMap, UserNamespace};
use crate::engine::{EngineOptions, Limits, WasiContext};
use crate::protocol::MAX_MOUNT_FDS;
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxCapabilities, LinuxNamespaceType, LinuxSeccomp, PosixRlimit, Process, Spec, User};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    Bind { recursive: bool },
    Tmpfs { options: String },
}

/// A mount made inside the container before it pivots into its rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub kind: MountKind,
    /// `ro`: read-only in the kernel (with every submount) and in WASI.
    pub readonly: bool,
    /// An idmapped bind mount's mappings (see [`Launch::shim_binds`]).
    pub idmap: Option<MountIdMap>,
}

/// The ID mappings of an idmapped mount (`mounts[].uidMappings`/`gidMappings`, or the `idmap`
/// and `ridmap` options with the container's own), and whether its submounts get them too
/// (`ridmap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountIdMap {
    pub map: IdMap,
    pub recursive: bool,
}


/// A namespace the container process gets: a new one, or the one at `path` (as in a pod).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub kind: String,
    pub path: Option<PathBuf>,
}

/// What a container's process (init or exec) may do once it runs, from its OCI process; applied
/// by [`crate::process::security`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub user: User,
    pub rlimits: Vec<PosixRlimit>,
    pub capabilities: Option<LinuxCapabilities>,
    pub seccomp: Option<LinuxSeccomp>,
    pub oom_score_adj: Option<i32>,
}

impl Security {
    /// What `process` asks for; `seccomp` is the container's profile, which its execs get too.
    pub fn new(process: &Process, seccomp: Option<LinuxSeccomp>) -> Security {
        Security {
            user: process.user().clone(),
            rlimits: process.rlimits().clone().unwrap_or_default(),
            capabilities: process.capabilities().clone(),
            seccomp,
            oom_score_adj: process.oom_score_adj(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub id: String,
    /// The rootfs as the shim sees it (absolute).
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    pub cwd: PathBuf,
    pub hostname: Option<String>,
    pub mounts: Vec<Mount>,
    pub namespaces: Vec<Namespace>,
    /// The user namespace, when the spec asks for one (see [`super::userns`]).
    pub user: Option<UserNamespace>,
    /// The cgroup the process joins, relative to each hierarchy's root.
    pub cgroup: Option<String>,
    /// The spec's cgroupsPath is systemd's `slice:prefix:name` (runc is told so).
    pub systemd_cgroup: bool,
    /// The module's path inside the container.
    pub entrypoint: PathBuf,
    pub wasi: WasiContext,
    pub engine: EngineOptions,
    pub security: Security,
}

/// The annotation that sets a container's wall-clock time limit (`30s`, `1500ms`, `2m`).
pub const TIME_LIMIT_ANNOTATION: &str = "wasmedge.io/time-limit";

/// Filesystems that only make sense for Linux processes; a wasm module cannot use them, and
/// leaving them out keeps host kernel interfaces away from the module.
const SKIPPED_FS: &[&str] = &["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];

impl Launch {
    /// `defaults` are the shim's engine options; the spec's memory limit and annotations refine them.
    /// `systemd_cgroup` is the runtime option `SystemdCgroup` (see [`cgroup::resolve`]).
    pub fn from_spec(id: &str, bundle: &Path, spec: &Spec, defaults: &EngineOptions, systemd_cgroup: bool) -> Result<Launch> {
        let process = spec.process().as_ref().context("config.json has no process")?;
        let args = process.args().clone().unwrap_or_default();
        let Some(entry) = args.first() else { bail!("config.json: process.args is empty: no entrypoint") };
        let cwd = process.cwd().clone();
        let root = spec.root().as_ref().context("config.json has no root")?;
        let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };

        let linux = spec.linux().as_ref();
        let user = UserNamespace::from_spec(linux, Some(process.user()))?;
        let mut mounts = Vec::new();
        for m in spec.mounts().iter().flatten() {
            mounts.extend(Self::mount_from_spec(m, user.as_ref())?);
        }
        let binds = mounts.iter().filter(|m| matches!(m.kind, MountKind::Bind { .. })).count();
        if user.is_some() && binds > MAX_MOUNT_FDS {
            bail!("{binds} bind mounts in a user namespace; the wasmedge shim takes at most {MAX_MOUNT_FDS}");
        }
        let readonly_rootfs = root.readonly().unwrap_or(false);
        let env = process.env().clone().unwrap_or_default();
        let wasi = wasi_view(&args, &env, &cwd, readonly_rootfs, &mounts);

        let namespaces = linux
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
            .map(|ns| Namespace { kind: namespace_name(ns.typ()).to_string(), path: ns.path().clone() })
            .collect();
        let cgroups_path = linux.and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned());
        let cgroup = cgroups_path.as_deref().map(|p| cgroup::resolve(p, systemd_cgroup)).transpose()?;
        let mut engine = defaults.clone();
        let memory = linux.and_then(|l| l.resources().as_ref()).and_then(|r| r.memory().as_ref()).and_then(|m| m.limit());
        if let Some(pages) = memory.and_then(Limits::memory_pages_for) {
            engine.limits.max_memory_pages = Some(pages);
        }
        if let Some(value) = spec.annotations().as_ref().and_then(|a| a.get(TIME_LIMIT_ANNOTATION)) {
            let limit = parse_duration(value).with_context(|| format!("annotation {TIME_LIMIT_ANNOTATION}={value}"))?;
            engine.limits.time_limit = (!limit.is_zero()).then_some(limit);
        }
        Ok(Launch {
            id: id.to_string(),
            rootfs,
            readonly_rootfs,
            entrypoint: cwd.join(entry),
            cwd,
            hostname: spec.hostname().clone(),
            mounts,
            namespaces,
            user,
            cgroup,
            systemd_cgroup: cgroups_path.is_some_and(|p| cgroup::is_systemd_form(&p, systemd_cgroup)),
            wasi,
            engine,
            security: Security::new(process, linux.and_then(|l| l.seccomp().clone())),
        })
    }

    fn mount_from_spec(m: &oci_spec::runtime::Mount, user: Option<&UserNamespace>) -> Result<Option<Mount>> {
        let options = m.options().clone().unwrap_or_default();
        let has = |o: &str| options.iter().any(|x| x == o);
        let fs = m.typ().as_deref().unwrap_or("");
        let kind = if has("bind") || has("rbind") || fs == "bind" {
            MountKind::Bind { recursive: has("rbind") }
        } else if fs == "tmpfs" {
            let data: Vec<&str> = options.iter().map(String::as_str).filter(|o| o.contains('=')).collect();
            MountKind::Tmpfs { options: data.join(",") }
        } else {
            if !SKIPPED_FS.contains(&fs) {
                log::debug!("skipping mount of type {fs:?} at {}", m.destination().display());
            }
            return Ok(None);
        };
        let idmap = mount_idmap(m, &options, user)?;
        if idmap.is_some() && !matches!(kind, MountKind::Bind { .. }) {
            bail!("mount {}: the wasmedge shim idmaps bind mounts only", m.destination().display());
        }
        Ok(Some(Mount {
            source: m.source().clone().unwrap_or_default(),
            destination: m.destination().clone(),
            kind,
            readonly: has("ro"),
            idmap,
        }))
    }

    /// Whether the shim makes `m`'s tree, which the process finds open from
    /// [`crate::protocol::FIRST_MOUNT_FD`] on, in the order of the mounts, and only attaches:
    /// every bind mount of a container in a user namespace, whose root may neither idmap a
    /// mount nor always reach the source (see [`super::idmap`]).
    pub fn shim_binds(&self, m: &Mount) -> bool {
        self.user.is_some() && matches!(m.kind, MountKind::Bind { .. })
    }

    pub fn new_namespace(&self, kind: &str) -> bool {
        self.namespaces.iter().any(|ns| ns.kind == kind && ns.path.is_none())
    }
}

/// The ID mappings mount `m` asks for: its own, or with the `idmap`/`ridmap` option alone the
/// container's user namespace's.
fn mount_idmap(m: &oci_spec::runtime::Mount, options: &[String], user: Option<&UserNamespace>) -> Result<Option<MountIdMap>> {
    let has = |o: &str| options.iter().any(|x| x == o);
    let dest = m.destination().display();
    let map = match (m.uid_mappings().clone(), m.gid_mappings().clone()) {
        (None, None) if !has("idmap") && !has("ridmap") => return Ok(None),
        _ if user.is_none() => bail!("mount {dest}: the wasmedge shim idmaps mounts of a container in a user namespace only (linux.namespaces: user)"),
        (None, None) => match user {
            Some(ns) if !ns.uid_mappings.is_empty() && !ns.gid_mappings.is_empty() => IdMap { uids: ns.uid_mappings.clone(), gids: ns.gid_mappings.clone() },
            _ => bail!("mount {dest}: the idmap option needs the mount's own uidMappings and gidMappings, or the container's"),
        },
        (Some(uids), Some(gids)) => IdMap { uids, gids },
        _ => bail!("mount {dest}: an idmapped mount needs both uidMappings and gidMappings"),
    };
    check_ranges(&format!("mount {dest}: uidMappings"), &map.uids)?;
    check_ranges(&format!("mount {dest}: gidMappings"), &map.gids)?;
    Ok(Some(MountIdMap { map, recursive: has("ridmap") }))
}

/// What a process of the container may open: the root, and each mount at its destination so that
/// it keeps its read-only flag, as the root does.
pub fn wasi_view(args: &[String], env: &[String], cwd: &Path, readonly_rootfs: bool, mounts: &[Mount]) -> WasiContext {
    let mounts = mounts.iter().map(|m| (m.destination.to_str().unwrap_or_default(), m.readonly));
    WasiContext::from_process(args, env, &cwd.to_string_lossy(), readonly_rootfs, mounts)
}

/// Refuses what a spec asks of a wasm container that the shim cannot give it, rather than
/// dropping it unseen (runc, which runs the Linux containers, gives all of it).
pub fn refuse_unsupported(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let namespace = |t: LinuxNamespaceType| linux.and_then(|l| l.namespaces().as_ref()).into_iter().flatten().any(|ns| ns.typ() == t);
    let asked = [
        ("a time namespace (linux.namespaces: time)", namespace(LinuxNamespaceType::Time)),
        ("time offsets (linux.timeOffsets)", linux.is_some_and(|l| l.time_offsets().is_some())),
        ("Intel RDT (linux.intelRdt)", linux.is_some_and(|l| l.intel_rdt().is_some())),
        ("an execution domain (linux.personality)", linux.is_some_and(|l| l.personality().is_some())),
        ("a NUMA memory policy (linux.memoryPolicy)", linux.is_some_and(|l| l.memory_policy().is_some())),
        ("network devices (linux.netDevices)", linux.is_some_and(|l| l.net_devices().as_ref().is_some_and(|d| !d.is_empty()))),
    ];
    refuse_any(&asked)?;
    spec.process().as_ref().map_or(Ok(()), refuse_unsupported_process)
}

/// The part of [`refuse_unsupported`] that holds for an exec's process too.
pub fn refuse_unsupported_process(process: &Process) -> Result<()> {
    refuse_any(&[
        ("a scheduling policy (process.scheduler)", process.scheduler().is_some()),
        ("an I/O priority (process.ioPriority)", process.io_priority().is_some()),
        ("a CPU affinity (process.execCPUAffinity)", process.exec_cpu_affinity().is_some()),
    ])
}

/// Fails naming the first of `asked` (what, whether the spec asks for it) that is asked for.
fn refuse_any(asked: &[(&str, bool)]) -> Result<()> {
    match asked.iter().find(|(_, asked)| *asked) {
        Some((what, _)) => bail!("the wasmedge shim does not support {what} for a wasm container"),
        None => Ok(()),
    }
}

/// A duration as `1500ms`, `30s`, `2m` or plain seconds; 0 means no limit.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = number.parse().with_context(|| format!("{s:?} is not a duration like 30s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("{s:?} has an unknown unit (use ms, s, m or h)"),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| anyhow::anyhow!("{s:?} is too long a duration"))
}

/// The names `/proc/PID/ns/` uses.
fn namespace_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    fn sample() -> Spec {
        spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/app.wasm", "x"], "env": ["A=1"], "cwd": "/srv", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "h",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/host/data", "options": ["rbind", "ro"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=65536k"]}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}],
                      "cgroupsPath": "/default/c1",
                      "resources": {"memory": {"limit": 67108864}}},
            "annotations": {"wasmedge.io/time-limit": "2s"}
        }))
    }

    #[test]
    fn maps_process_root_and_mounts() {
        let l = Launch::from_spec("c1", Path::new("/b"), &sample(), &EngineOptions::default(), false).unwrap();
        assert_eq!(l.rootfs, PathBuf::from("/b/rootfs"));
        assert!(l.readonly_rootfs);
        assert_eq!(l.entrypoint, PathBuf::from("/app.wasm"));
        assert_eq!(l.cwd, PathBuf::from("/srv"));
        assert_eq!(l.mounts.len(), 2, "proc is skipped");
        assert_eq!((&l.mounts[0].kind, l.mounts[0].readonly), (&MountKind::Bind { recursive: true }, true));
        assert_eq!((&l.mounts[1].kind, l.mounts[1].readonly), (&MountKind::Tmpfs { options: "size=65536k".into() }, false));
        assert_eq!(l.wasi.args, vec!["/app.wasm", "x"]);
        let preopens: Vec<_> = l.wasi.preopens.iter().map(|p| (p.guest.to_str().unwrap(), p.readonly)).collect();
        assert_eq!(preopens, [("/", true), ("/data", true), ("/tmp", false)], "the read-only root, then each mount");
        assert_eq!(l.cgroup.as_deref(), Some("/default/c1"));
    }

    #[test]
    fn memory_limit_and_time_limit_annotation_become_engine_limits() {
        let l = Launch::from_spec("c1", Path::new("/b"), &sample(), &EngineOptions::default(), false).unwrap();
        assert_eq!(l.engine.limits.max_memory_pages, Some(1024));
        assert_eq!(l.engine.limits.time_limit, Some(Duration::from_secs(2)));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 days").is_err());
    }

    #[test]
    fn namespaces_keep_paths_to_join() {
        let l = Launch::from_spec("c1", Path::new("/b"), &sample(), &EngineOptions::default(), false).unwrap();
        assert!(l.new_namespace("pid"));
        assert!(!l.new_namespace("net"), "a namespace with a path is joined, not created");
    }

    #[test]
    fn relative_entrypoint_resolves_against_cwd() {
        let mut s = sample();
        let mut p = s.process().clone().unwrap();
        p.set_args(Some(vec!["bin/m.wasm".into()]));
        s.set_process(Some(p));
        let l = Launch::from_spec("c1", Path::new("/b"), &s, &EngineOptions::default(), false).unwrap();
        assert_eq!(l.entrypoint, PathBuf::from("/srv/bin/m.wasm"));
    }

    #[test]
    fn a_systemd_cgroups_path_becomes_its_cgroupfs_path() {
        let mut s = sample();
        let mut linux = s.linux().clone().unwrap();
        linux.set_cgroups_path(Some("kubepods-burstable-pod1.slice:cri-containerd:c1".into()));
        s.set_linux(Some(linux));
        let l = Launch::from_spec("c1", Path::new("/b"), &s, &EngineOptions::default(), false).unwrap();
        assert_eq!(l.cgroup.as_deref(), Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-c1.scope"));
        assert!(l.systemd_cgroup);
        let err = Launch::from_spec("c1", Path::new("/b"), &sample(), &EngineOptions::default(), true).unwrap_err();
        assert!(err.to_string().contains("not systemd's slice:prefix:name"), "SystemdCgroup with a cgroupfs path: {err}");
    }

    /// Each field the shim cannot honour, set on an otherwise supported spec, is refused by name.
    #[test]
    fn what_a_wasm_container_cannot_have_is_refused() {
        assert!(refuse_unsupported(&sample()).is_ok());
        let cases = [
            (serde_json::json!({"linux": {"namespaces": [{"type": "time"}]}}), "a time namespace"),
            (serde_json::json!({"linux": {"timeOffsets": {"monotonic": {"secs": 1, "nanosecs": 0}}}}), "linux.timeOffsets"),
            (serde_json::json!({"linux": {"intelRdt": {"closID": "c1"}}}), "linux.intelRdt"),
            (serde_json::json!({"linux": {"personality": {"domain": "LINUX32"}}}), "linux.personality"),
            (serde_json::json!({"linux": {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0"}}}), "linux.memoryPolicy"),
            (serde_json::json!({"linux": {"netDevices": {"eth1": {}}}}), "linux.netDevices"),
            (serde_json::json!({"process": {"scheduler": {"policy": "SCHED_FIFO", "priority": 1}}}), "process.scheduler"),
            (serde_json::json!({"process": {"ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}}}), "process.ioPriority"),
            (serde_json::json!({"process": {"execCPUAffinity": {"initial": "0"}}}), "process.execCPUAffinity"),
        ];
        for (patch, what) in cases {
            let mut json = serde_json::to_value(sample()).unwrap();
            for (section, fields) in patch.as_object().unwrap() {
                for (key, value) in fields.as_object().unwrap() {
                    json[section][key] = value.clone();
                }
            }
            let err = refuse_unsupported(&spec(json)).expect_err(what).to_string();
            assert!(err.contains(what) && err.contains("does not support"), "{what}: {err}");
        }
    }

    /// A bind mount's own mappings, or the container's with the `idmap` option; what cannot be
    /// given is refused in one line.
    #[test]
    fn idmapped_mounts_take_their_mappings() {
        let range = |host| serde_json::json!([{"containerID": 0, "hostID": host, "size": 65536}]);
        let plan = |json: serde_json::Value| Launch::from_spec("c1", Path::new("/b"), &spec(json), &EngineOptions::default(), false);
        let mut json = serde_json::to_value(sample()).unwrap();
        json["mounts"][1]["uidMappings"] = range(1000);
        json["mounts"][1]["gidMappings"] = range(2000);
        let err = plan(json.clone()).unwrap_err().to_string();
        assert!(err.starts_with("mount /data: the wasmedge shim idmaps mounts of a container in a user namespace only"), "{err}");
        json["linux"]["namespaces"] = serde_json::json!([{"type": "user", "path": "/proc/1/ns/user"}, {"type": "mount"}]);
        let idmap = plan(json.clone()).unwrap().mounts[0].idmap.clone().unwrap();
        assert_eq!((idmap.map.uids[0].host_id(), idmap.map.gids[0].host_id(), idmap.recursive), (1000, 2000, false));

        json["mounts"][1]["gidMappings"] = serde_json::Value::Null;
        let err = plan(json.clone()).unwrap_err().to_string();
        assert_eq!(err, "mount /data: an idmapped mount needs both uidMappings and gidMappings");

        json["mounts"][1]["uidMappings"] = serde_json::Value::Null;
        json["mounts"][1]["options"] = serde_json::json!(["rbind", "ridmap"]);
        let err = plan(json.clone()).unwrap_err().to_string();
        assert!(err.starts_with("mount /data: the idmap option needs"), "{err}");
        json["linux"]["namespaces"] = serde_json::json!([{"type": "user"}, {"type": "mount"}]);
        json["linux"]["uidMappings"] = range(3000);
        json["linux"]["gidMappings"] = range(3000);
        let idmap = plan(json.clone()).unwrap().mounts[0].idmap.clone().unwrap();
        assert_eq!((idmap.map.uids[0].host_id(), idmap.recursive), (3000, true));

        json["mounts"][2]["options"] = serde_json::json!(["idmap"]);
        let err = plan(json).unwrap_err().to_string();
        assert_eq!(err, "mount /tmp: the wasmedge shim idmaps bind mounts only");
    }

    /// The user namespace is checked as the plan is made (see [`super::super::userns`]).
    #[test]
    fn mappings_without_a_user_namespace_are_refused_by_the_plan() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        let err = Launch::from_spec("c1", Path::new("/b"), &spec(json.clone()), &EngineOptions::default(), false).unwrap_err();
        assert!(err.to_string().contains("need a user namespace"), "{err}");
        json["linux"]["namespaces"] = serde_json::json!([{"type": "user"}]);
        json["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        let launch = Launch::from_spec("c1", Path::new("/b"), &spec(json), &EngineOptions::default(), false).unwrap();
        assert!(launch.user.is_some_and(|u| u.is_new() && u.host_uid(0) == Some(1000)));
    }

    #[test]
    fn empty_args_is_an_error() {
        let mut s = sample();
        let mut p = s.process().clone().unwrap();
        p.set_args(Some(vec![]));
        s.set_process(Some(p));
        let err = Launch::from_spec("c1", Path::new("/b"), &s, &EngineOptions::default(), false).unwrap_err();
        assert!(err.to_string().contains("no entrypoint"), "{err}");
    }
}
