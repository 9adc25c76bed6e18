//! systemd's D-Bus API, for a container whose cgroupsPath is systemd's `slice:prefix:name` on a
//! node that systemd runs: as runc's systemd cgroup driver does, the shim asks systemd for a
//! transient scope holding the container process, with the spec's resources as unit properties,
//! so that systemd knows the cgroup (and neither moves its processes nor removes it), and stops
//! the scope at delete. What systemd cannot express is then written in cgroupfs
//! ([`super::cgroup::create`]).
use anyhow::{anyhow, bail, Context, Result};
use futures_lite::StreamExt;
use oci_spec::runtime::LinuxResources;
use std::time::Duration;
use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::MatchRule;

const SERVICE: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long systemd may take to answer a call or to finish a job (runc waits as long).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A unit property as StartTransientUnit takes it: `(name, value)`, D-Bus type `(sv)`.
pub type Property = (&'static str, Value<'static>);

/// Whether systemd runs this node (sd_booted's test).
pub fn booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// The transient unit of a container: a scope `PREFIX-NAME.scope` in its slice, or the slice
/// `NAME` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub slice: String,
}

impl Unit {
    fn is_slice(&self) -> bool {
        self.name.ends_with(".slice")
    }

    /// Starts the unit with `pid` in it (a scope; a slice holds no process of its own: the
    /// process joins it in cgroupfs) and waits until systemd has made it.
    pub fn start(&self, description: &str, pid: u32, resources: Option<&LinuxResources>) -> Result<()> {
        let context = || format!("systemd: starting {}", self.name);
        let v2 = cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode();
        let properties = self.properties(description, pid, resources, v2);
        let aux: Vec<(&str, Vec<Property>)> = Vec::new();
        let bus = connect().with_context(context)?;
        match bus.run_job("StartTransientUnit", &(self.name.as_str(), "replace", &properties, &aux)) {
            // A failed scope of the same name is kept until reset: reset it and try once more.
            Err(e) if is_error(&e, "org.freedesktop.systemd1.UnitExists") => {
                let _ = bus.call("ResetFailedUnit", &(self.name.as_str(),));
                bus.run_job("StartTransientUnit", &(self.name.as_str(), "replace", &properties, &aux))
            }
            other => other,
        }
        .with_context(context)
    }

    /// Stops the unit (it is unloaded then) and forgets it if it failed; a unit that is gone
    /// already is no error.
    pub fn stop(&self) -> Result<()> {
        let context = || format!("systemd: stopping {}", self.name);
        let bus = connect().with_context(context)?;
        match bus.run_job("StopUnit", &(self.name.as_str(), "replace")) {
            Err(e) if is_error(&e, "org.freedesktop.systemd1.NoSuchUnit") => return Ok(()),
            other => other.with_context(context)?,
        }
        match bus.call("ResetFailedUnit", &(self.name.as_str(),)) {
            Err(e) if !is_error(&e, "org.freedesktop.systemd1.NoSuchUnit") => Err(e).with_context(context),
            _ => Ok(()),
        }
    }

    /// The unit's properties: runc's set (the slice, delegation, accounting) and the spec's
    /// resources in systemd's terms for cgroup v2 (`v2`) or v1.
    pub fn properties(&self, description: &str, pid: u32, resources: Option<&LinuxResources>, v2: bool) -> Vec<Property> {
        let mut props: Vec<Property> = vec![("Description", Value::from(description.to_string()))];
        if self.is_slice() {
            props.push(("Wants", Value::from(vec![self.slice.clone()])));
        } else {
            props.extend([
                ("Slice", Value::from(self.slice.clone())),
                ("Delegate", Value::from(true)),
                ("PIDs", Value::from(vec![pid])),
            ]);
        }
        props.extend([
            ("DefaultDependencies", Value::from(false)),
            ("MemoryAccounting", Value::from(true)),
            ("CPUAccounting", Value::from(true)),
            ("TasksAccounting", Value::from(true)),
            (if v2 { "IOAccounting" } else { "BlockIOAccounting" }, Value::from(true)),
        ]);
        if let Some(r) = resources {
            props.extend(resource_properties(r, v2));
        }
        props
    }
}

/// `limit` in systemd's terms: a negative value (the OCI spec's "unlimited") is infinity.
fn limit_or_infinity(limit: i64) -> u64 {
    u64::try_from(limit).unwrap_or(u64::MAX)
}

/// The spec's memory, CPU and pids resources as unit properties, converted as runc does (a v1
/// CPU share is a v2 weight on another scale; a quota per period is a quota per second, in the
/// whole percent of a CPU systemd keeps). The rest of the spec is written in cgroupfs.
fn resource_properties(r: &LinuxResources, v2: bool) -> Vec<Property> {
    let mut props = Vec::new();
    if let Some(memory) = r.memory() {
        if let Some(limit) = memory.limit().filter(|&l| l != 0) {
            props.push((if v2 { "MemoryMax" } else { "MemoryLimit" }, Value::from(limit_or_infinity(limit))));
        }
        if v2 {
            if let Some(low) = memory.reservation().filter(|&l| l > 0) {
                props.push(("MemoryLow", Value::from(low as u64)));
            }
            // v2 limits swap alone; the spec's swap is memory plus swap.
            match (memory.swap(), memory.limit()) {
                (Some(-1), _) => props.push(("MemorySwapMax", Value::from(u64::MAX))),
                (Some(swap), Some(limit)) if swap > 0 && limit > 0 && swap >= limit => {
                    props.push(("MemorySwapMax", Value::from((swap - limit) as u64)))
                }
                _ => {}
            }
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
            if v2 {
                let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
                props.push(("CPUWeight", Value::from(weight)));
            } else {
                props.push(("CPUShares", Value::from(shares)));
            }
        }
        let period = cpu.period().filter(|&p| p != 0);
        if let Some(period) = period {
            props.push(("CPUQuotaPeriodUSec", Value::from(period)));
        }
        match cpu.quota() {
            Some(quota) if quota > 0 => {
                let per_second = (quota as u64 * 1_000_000 / period.unwrap_or(100_000)).div_ceil(10_000) * 10_000;
                props.push(("CPUQuotaPerSecUSec", Value::from(per_second)));
            }
            Some(_) if period.is_some() => props.push(("CPUQuotaPerSecUSec", Value::from(u64::MAX))),
            _ => {}
        }
    }
    if let Some(pids) = r.pids() {
        let limit = pids.limit();
        props.push(("TasksMax", Value::from(if limit > 0 { limit as u64 } else { u64::MAX })));
    }
    props
}

/// A connection to systemd on the system bus. Not its private socket /run/systemd/private:
/// systemd's messages there name a sender that is no unique name, and zbus 5.19's reader
/// thread panics on them ("Invalid field reconstruction").
struct Bus(Connection);

fn connect() -> Result<Bus> {
    let bus = zbus::blocking::connection::Builder::system().and_then(|b| b.method_timeout(TIMEOUT).build());
    Ok(Bus(bus.context("connecting to the system bus")?))
}

fn is_error(e: &anyhow::Error, name: &str) -> bool {
    matches!(e.downcast_ref::<zbus::Error>(), Some(zbus::Error::MethodError(n, _, _)) if n.as_str() == name)
}

impl Bus {
    fn call<B: serde::Serialize + zbus::zvariant::DynamicType>(&self, method: &str, body: &B) -> Result<zbus::Message> {
        Ok(self.0.call_method(Some(SERVICE), PATH, Some(MANAGER), method, body)?)
    }

    /// Calls `method`, which queues a job, and waits for systemd to finish it: the job is
    /// removed, with its result.
    fn run_job<B: serde::Serialize + zbus::zvariant::DynamicType>(&self, method: &str, body: &B) -> Result<()> {
        // Listening first: the job may end before its reply is read.
        let rule = MatchRule::builder().msg_type(Type::Signal).interface(MANAGER)?.member("JobRemoved")?.build();
        let removed = MessageIterator::for_match_rule(rule, &self.0, None)?.into_inner();
        // systemd sends its signals only to subscribed clients.
        self.call("Subscribe", &())?;
        let job: OwnedObjectPath = self.call(method, body)?.body().deserialize()?;
        let result = async_io::block_on(futures_lite::future::or(job_result(removed, &job), async {
            async_io::Timer::after(TIMEOUT).await;
            Err(anyhow!("job {} did not finish in {TIMEOUT:?}", job.as_str()))
        }))?;
        if result != "done" {
            bail!("job {} ended {result:?}", job.as_str());
        }
        Ok(())
    }
}

/// The result of `job` (`done`, `failed`, `canceled`, `timeout`, `dependency`, `skipped`) when
/// JobRemoved(id, job, unit, result) announces it.
async fn job_result(mut removed: zbus::MessageStream, job: &OwnedObjectPath) -> Result<String> {
    while let Some(message) = removed.next().await {
        let (_, path, _, result): (u32, OwnedObjectPath, String, String) = message?.body().deserialize()?;
        if &path == job {
            return Ok(result);
        }
    }
    bail!("the connection to systemd closed before job {} finished", job.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

    fn scope() -> Unit {
        Unit { name: "cri-containerd-c1.scope".into(), slice: "kubepods-besteffort.slice".into() }
    }

    fn find<'a>(props: &'a [Property], name: &str) -> Option<&'a Value<'static>> {
        props.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn resources(memory: i64, swap: i64, shares: u64, quota: i64, period: u64, pids: i64) -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(memory).reservation(memory / 2).swap(swap).build().unwrap())
            .cpu(LinuxCpuBuilder::default().shares(shares).quota(quota).period(period).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(pids).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn a_scope_holds_the_process_in_its_slice_with_delegation() {
        let props = scope().properties("wasm container c1", 4242, None, true);
        assert_eq!(find(&props, "Slice"), Some(&Value::from("kubepods-besteffort.slice")));
        assert_eq!(find(&props, "Delegate"), Some(&Value::from(true)));
        assert_eq!(find(&props, "PIDs"), Some(&Value::from(vec![4242u32])));
        assert_eq!(find(&props, "Description"), Some(&Value::from("wasm container c1")));
        assert_eq!(find(&props, "IOAccounting"), Some(&Value::from(true)));
        assert_eq!(find(&props, "BlockIOAccounting"), None);
        assert_eq!(find(&props, "MemoryMax"), None, "no resources, no limits");
    }

    #[test]
    fn a_slice_unit_wants_its_parent_and_holds_no_process() {
        let unit = Unit { name: "inner.slice".into(), slice: "machine.slice".into() };
        let props = unit.properties("d", 4242, None, false);
        assert_eq!(find(&props, "Wants"), Some(&Value::from(vec!["machine.slice".to_string()])));
        assert_eq!(find(&props, "PIDs"), None);
        assert_eq!(find(&props, "Delegate"), None);
        assert_eq!(find(&props, "BlockIOAccounting"), Some(&Value::from(true)));
    }

    #[test]
    fn v2_resources_map_to_systemd_v2_properties() {
        let props = scope().properties("d", 1, Some(&resources(128 << 20, 192 << 20, 1024, 50_000, 100_000, 64)), true);
        assert_eq!(find(&props, "MemoryMax"), Some(&Value::from(128u64 << 20)));
        assert_eq!(find(&props, "MemoryLow"), Some(&Value::from(64u64 << 20)));
        assert_eq!(find(&props, "MemorySwapMax"), Some(&Value::from(64u64 << 20)), "v2 swap excludes memory");
        assert_eq!(find(&props, "CPUWeight"), Some(&Value::from(39u64)), "runc's shares-to-weight scale");
        assert_eq!(find(&props, "CPUShares"), None);
        assert_eq!(find(&props, "CPUQuotaPerSecUSec"), Some(&Value::from(500_000u64)));
        assert_eq!(find(&props, "CPUQuotaPeriodUSec"), Some(&Value::from(100_000u64)));
        assert_eq!(find(&props, "TasksMax"), Some(&Value::from(64u64)));
        assert_eq!(find(&props, "MemoryLimit"), None);
    }

    #[test]
    fn v1_resources_map_to_systemd_v1_properties() {
        let props = scope().properties("d", 1, Some(&resources(128 << 20, 192 << 20, 512, 50_000, 100_000, 64)), false);
        assert_eq!(find(&props, "MemoryLimit"), Some(&Value::from(128u64 << 20)));
        assert_eq!(find(&props, "CPUShares"), Some(&Value::from(512u64)));
        assert_eq!(find(&props, "MemoryMax"), None);
        assert_eq!(find(&props, "MemoryLow"), None);
        assert_eq!(find(&props, "MemorySwapMax"), None);
        assert_eq!(find(&props, "CPUWeight"), None);
        assert_eq!(find(&props, "BlockIOAccounting"), Some(&Value::from(true)));
    }

    #[test]
    fn unlimited_and_odd_values_convert_as_runc_does() {
        let props = scope().properties("d", 1, Some(&resources(-1, -1, 2, -1, 100_000, -1)), true);
        assert_eq!(find(&props, "MemoryMax"), Some(&Value::from(u64::MAX)));
        assert_eq!(find(&props, "MemorySwapMax"), Some(&Value::from(u64::MAX)));
        assert_eq!(find(&props, "CPUWeight"), Some(&Value::from(1u64)), "the least share is the least weight");
        assert_eq!(find(&props, "CPUQuotaPerSecUSec"), Some(&Value::from(u64::MAX)), "no quota: infinity");
        assert_eq!(find(&props, "TasksMax"), Some(&Value::from(u64::MAX)));
        // A quota that is not a whole percent of a CPU is rounded up to one.
        let props = scope().properties("d", 1, Some(&resources(0, 0, 262_144, 12_345, 100_000, 10)), true);
        assert_eq!(find(&props, "CPUQuotaPerSecUSec"), Some(&Value::from(130_000u64)));
        assert_eq!(find(&props, "CPUWeight"), Some(&Value::from(10_000u64)), "the most share is the most weight");
        assert_eq!(find(&props, "MemoryMax"), None, "0: no limit asked");
        assert_eq!(find(&props, "MemorySwapMax"), None);
    }

    #[test]
    fn properties_serialize_as_start_transient_unit_takes_them() {
        let props = scope().properties("d", 1, Some(&resources(1, 1, 2, 1, 1, 1)), true);
        let aux: Vec<(&str, Vec<Property>)> = Vec::new();
        let body = ("u.scope", "replace", &props, &aux);
        assert_eq!(zbus::zvariant::DynamicType::signature(&body).to_string(), "(ssa(sv)a(sa(sv)))");
    }
}
