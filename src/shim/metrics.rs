//! A running container's cgroup, as Task.Stats, Pause, Resume and Update see it.
use super::task::Task;
use super::tasks::rpc_error;
use containerd_shim::{
    protos::{protobuf::well_known_types::any::Any, ttrpc::Code},
    util::convert_to_any,
    TtrpcResult,
};

/// The cgroup metrics of a running container, v1 completed with what `docker stats` shows.
pub fn stats(task: &Task) -> TtrpcResult<Any> {
    let cg = cgroup_of(task)?;
    let stats = if cg.v2() {
        convert_to_any(Box::new(containerd_shim::cgroup::collect_metrics_v2(&cg).map_err(|e| rpc_error(Code::INTERNAL, e))?))
    } else {
        let mut metrics = containerd_shim::cgroup::collect_metrics(&cg).map_err(|e| rpc_error(Code::INTERNAL, e))?;
        complete_v1_metrics(&cg, &mut metrics);
        convert_to_any(Box::new(metrics))
    };
    stats.map_err(|e| rpc_error(Code::INTERNAL, e))
}

/// What containerd-shim's cgroup v1 collection leaves out and `docker stats` shows: the memory
/// limit and peak, and CPU time (v1 keeps it in cpuacct, not in cpu.stat).
fn complete_v1_metrics(cg: &cgroups_rs::fs::Cgroup, metrics: &mut containerd_shim::protos::cgroups::metrics::Metrics) {
    use cgroups_rs::fs::{cpuacct::CpuAcctController, memory::MemController};
    if let Some(mem) = cg.controller_of::<MemController>() {
        let stat = mem.memory_stat();
        // Unlimited is a huge number in v1: the node's memory is the real bound.
        let node = node_memory().unwrap_or(u64::MAX);
        let limit = u64::try_from(stat.limit_in_bytes).unwrap_or(u64::MAX).min(node);
        let usage = metrics.mut_memory().mut_usage();
        usage.set_limit(limit);
        usage.set_max(stat.max_usage_in_bytes);
        usage.set_failcnt(stat.fail_cnt);
    }
    if let Some(acct) = cg.controller_of::<CpuAcctController>() {
        let acct = acct.cpuacct();
        let cpu = metrics.mut_cpu().mut_usage();
        if cpu.total() == 0 {
            cpu.set_total(acct.usage);
            cpu.set_user(acct.usage_user);
            cpu.set_kernel(acct.usage_sys);
            cpu.set_per_cpu(acct.usage_percpu.split_whitespace().filter_map(|v| v.parse().ok()).collect());
        }
    }
}

/// MemTotal of /proc/meminfo, in bytes.
fn node_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The cgroup of a running container's process.
pub fn cgroup_of(task: &Task) -> TtrpcResult<cgroups_rs::fs::Cgroup> {
    let pid = task.init.running_pid().ok_or_else(|| rpc_error(Code::FAILED_PRECONDITION, format!("container {} is not running", task.id)))?;
    containerd_shim::cgroup::get_cgroup(pid as u32).map_err(|e| rpc_error(Code::INTERNAL, e))
}

pub fn freezer(task: &Task) -> TtrpcResult<cgroups_rs::fs::freezer::FreezerController> {
    let cg = cgroup_of(task)?;
    cg.controller_of::<cgroups_rs::fs::freezer::FreezerController>()
        .cloned()
        .ok_or_else(|| rpc_error(Code::FAILED_PRECONDITION, format!("container {} has no freezer cgroup", task.id)))
}
