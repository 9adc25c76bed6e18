//! What a container's process (its init or an exec) may do once it runs: its user, rlimits,
//! capabilities, seccomp filter and OOM score, as the OCI spec says. Applied last, after
//! pivot_root, in this order: rlimits, the bounding set, the user (keeping the permitted set),
//! the other capability sets, no_new_privs, seccomp (which could forbid the calls before it);
//! the OOM score before that, while the host's /proc is still there.
use crate::launch::plan::Security;
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompOperator as Op,
    PosixRlimit, User,
};
use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

/// Writes the spec's oom_score_adj, failing as runc does when the kernel refuses it: going
/// below the score the process inherited needs CAP_SYS_RESOURCE, so it comes before the
/// capability sets change (and before pivot_root, which leaves /proc behind).
pub fn adjust_oom_score(security: &Security) -> Result<()> {
    let Some(score) = security.oom_score_adj else { return Ok(()) };
    std::fs::write("/proc/self/oom_score_adj", score.to_string()).with_context(|| format!("setting oom_score_adj to {score}"))
}

pub fn apply(security: &Security) -> Result<()> {
    for r in &security.rlimits {
        set_rlimit(r)?;
    }
    // The filter is compiled before anything is dropped, so a bad profile fails cleanly.
    let filter = security.seccomp.as_ref().map(compile_seccomp).transpose().context("seccomp profile")?;
    // The user changes while the process still may (CAP_SETUID), keeping its permitted set
    // across the change; the spec's sets come after, so dropping all of them together with
    // a non-root user (the restricted Pod Security Standard) works.
    if let Some(c) = &security.capabilities {
        drop_bounding(c).context("setting the bounding set")?;
        nix::sys::prctl::set_keepcaps(true).context("keeping capabilities across the user change")?;
    }
    set_user(&security.user)?;
    if let Some(c) = &security.capabilities {
        nix::sys::prctl::set_keepcaps(false).context("clearing keepcaps")?;
        set_capabilities(c).context("setting capabilities")?;
    }
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    if let Some(filter) = filter {
        // On every thread, should the process have any by now.
        seccompiler::apply_filter_all_threads(&filter).context("installing the seccomp filter")?;
    }
    Ok(())
}

fn set_rlimit(r: &PosixRlimit) -> Result<()> {
    let name = r.typ().to_string();
    let resource = match name.as_str() {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        other => bail!("unknown rlimit {other}"),
    };
    let limit = libc::rlimit { rlim_cur: r.soft(), rlim_max: r.hard() };
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setting {name}"));
    }
    Ok(())
}

fn cap_set(set: &Option<Capabilities>) -> Result<caps::CapsHashSet> {
    set.iter()
        .flatten()
        .map(|c| {
            let name = c.to_string();
            let name = if name.starts_with("CAP_") { name } else { format!("CAP_{name}") };
            caps::Capability::from_str(&name).map_err(|e| anyhow::anyhow!("{name}: {e}"))
        })
        .collect()
}

fn drop_bounding(c: &LinuxCapabilities) -> Result<()> {
    use caps::CapSet;
    let bounding = cap_set(c.bounding())?;
    for cap in caps::read(None, CapSet::Bounding)?.difference(&bounding) {
        caps::drop(None, CapSet::Bounding, *cap)?;
    }
    Ok(())
}

/// The effective, permitted, inheritable and ambient sets, once the user is set.
fn set_capabilities(c: &LinuxCapabilities) -> Result<()> {
    use caps::CapSet;
    // Effective first: it must stay within the permitted set at each step.
    caps::set(None, CapSet::Effective, &cap_set(c.effective())?)?;
    caps::set(None, CapSet::Permitted, &cap_set(c.permitted())?)?;
    caps::set(None, CapSet::Inheritable, &cap_set(c.inheritable())?)?;
    // Ambient capabilities need to be permitted and inheritable; a failure here is not fatal.
    let _ = caps::set(None, CapSet::Ambient, &cap_set(c.ambient())?);
    Ok(())
}

fn set_user(user: &User) -> Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let groups: Vec<Gid> = user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).context("setting supplementary groups")?;
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    setresgid(gid, gid, gid).with_context(|| format!("setting gid {gid}"))?;
    setresuid(uid, uid, uid).with_context(|| format!("setting uid {uid}"))?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

fn action(a: Action, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match a {
        Action::ScmpActAllow => SeccompAction::Allow,
        Action::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        Action::ScmpActKill | Action::ScmpActKillThread => SeccompAction::KillThread,
        Action::ScmpActKillProcess => SeccompAction::KillProcess,
        Action::ScmpActTrap => SeccompAction::Trap,
        Action::ScmpActLog => SeccompAction::Log,
        Action::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        Action::ScmpActNotify => bail!("SCMP_ACT_NOTIFY needs a listener, which this runtime does not provide"),
    })
}

fn condition(arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<SeccompCondition> {
    let op = match arg.op() {
        Op::ScmpCmpNe => SeccompCmpOp::Ne,
        Op::ScmpCmpLt => SeccompCmpOp::Lt,
        Op::ScmpCmpLe => SeccompCmpOp::Le,
        Op::ScmpCmpEq => SeccompCmpOp::Eq,
        Op::ScmpCmpGe => SeccompCmpOp::Ge,
        Op::ScmpCmpGt => SeccompCmpOp::Gt,
        // OCI's value is the mask and valueTwo the value to compare with.
        Op::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(arg.value()),
    };
    let value = if arg.op() == Op::ScmpCmpMaskedEq { arg.value_two().unwrap_or(0) } else { arg.value() };
    Ok(SeccompCondition::new(arg.index() as u8, SeccompCmpArgLen::Qword, op, value)?)
}

/// The filter of the shim's own sandboxes (the compile sandbox): every call but those that
/// would start a program, reach out of the sandbox or widen it, which fail with EPERM. On every
/// thread.
pub fn deny_escapes() -> Result<()> {
    const DENIED: &[i64] = &[
        libc::SYS_execve, libc::SYS_execveat, libc::SYS_ptrace, libc::SYS_process_vm_readv, libc::SYS_process_vm_writev,
        libc::SYS_mount, libc::SYS_umount2, libc::SYS_pivot_root, libc::SYS_chroot, libc::SYS_setns, libc::SYS_unshare,
        libc::SYS_socket, libc::SYS_socketpair, libc::SYS_connect, libc::SYS_bpf, libc::SYS_perf_event_open,
        libc::SYS_keyctl, libc::SYS_add_key, libc::SYS_request_key, libc::SYS_userfaultfd, libc::SYS_io_uring_setup,
        libc::SYS_open_by_handle_at, libc::SYS_name_to_handle_at, libc::SYS_kexec_load, libc::SYS_init_module,
        libc::SYS_finit_module, libc::SYS_delete_module, libc::SYS_reboot, libc::SYS_swapon, libc::SYS_swapoff,
        libc::SYS_mknod, libc::SYS_mknodat, libc::SYS_kill, libc::SYS_tgkill, libc::SYS_tkill,
    ];
    let rules = DENIED.iter().map(|&call| (call, Vec::new())).collect();
    let arch = std::env::consts::ARCH.try_into().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)?;
    let program: seccompiler::BpfProgram = filter.try_into()?;
    seccompiler::apply_filter_all_threads(&program)?;
    Ok(())
}

/// Compiles a profile to BPF. A BPF filter of seccompiler has one action for a match and one
/// for no match, which covers the profiles in use (an allow list over a deny default, or a
/// deny list over an allow default); rules whose action only differs from the default in its
/// errno fall back to the default.
pub fn compile_seccomp(profile: &LinuxSeccomp) -> Result<seccompiler::BpfProgram> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut on_match: Option<SeccompAction> = None;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut unconditional: HashSet<i64> = HashSet::new();
    for syscall in profile.syscalls().iter().flatten() {
        let act = action(syscall.action(), syscall.errno_ret())?;
        let same_kind = std::mem::discriminant(&act) == std::mem::discriminant(&default);
        if same_kind {
            continue;
        }
        match &on_match {
            None => on_match = Some(act.clone()),
            Some(m) if *m == act => {}
            Some(m) => bail!("the profile mixes the actions {m:?} and {act:?}, which this runtime cannot express"),
        }
        let conditions = syscall.args().iter().flatten().map(condition).collect::<Result<Vec<_>>>()?;
        for name in syscall.names() {
            // Profiles list the calls of every architecture; those unknown here do not apply.
            let Ok(nr) = syscalls::Sysno::from_str(name) else { continue };
            let nr = nr.id() as i64;
            if conditions.is_empty() {
                unconditional.insert(nr);
                rules.insert(nr, Vec::new());
            } else if !unconditional.contains(&nr) {
                rules.entry(nr).or_default().push(SeccompRule::new(conditions.clone())?);
            }
        }
    }
    let arch = std::env::consts::ARCH.try_into().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let filter = SeccompFilter::new(rules, default.clone(), on_match.unwrap_or(default), arch)?;
    Ok(filter.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn allow_list_profile_compiles() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "not_a_syscall_here"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }));
        assert!(!compile_seccomp(&p).unwrap().is_empty());
    }

    #[test]
    fn mixed_actions_are_refused_clearly() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["ptrace"], "action": "SCMP_ACT_KILL"}
            ]
        }));
        let err = compile_seccomp(&p).unwrap_err();
        assert!(err.to_string().contains("mixes the actions"), "{err}");
    }

    #[test]
    fn capability_names_map_to_caps() {
        let set: Capabilities = serde_json::from_value(serde_json::json!(["CAP_CHOWN", "CAP_NET_BIND_SERVICE"])).unwrap();
        let mapped = cap_set(&Some(set)).unwrap();
        assert!(mapped.contains(&caps::Capability::CAP_CHOWN));
        assert!(mapped.contains(&caps::Capability::CAP_NET_BIND_SERVICE));
    }
}
