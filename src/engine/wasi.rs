//! The WASI view of a container: argv, environment and the directories the module may open.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A directory the module sees at `guest`, backed by `host` in the container's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    pub guest: PathBuf,
    pub host: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasiContext {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub preopens: Vec<Preopen>,
}

impl WasiContext {
    /// Maps an OCI process onto WASI, as seen from inside the container (after pivot_root):
    /// argv and env pass through, the root is preopened at `/` (read-only with `readonly_root`),
    /// and each mount, a (destination, read-only) pair, gets its own preopen so it keeps its own
    /// flag. WASI has no working directory, so the OCI `cwd` reaches the module as `PWD` unless
    /// the spec sets it.
    pub fn from_process<'a>(
        args: &[String],
        env: &[String],
        cwd: &str,
        readonly_root: bool,
        mounts: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> WasiContext {
        let mut env = env.to_vec();
        if !env.iter().any(|e| e.starts_with("PWD=")) {
            env.push(format!("PWD={cwd}"));
        }
        let root = Preopen { guest: "/".into(), host: "/".into(), readonly: readonly_root };
        let mounts = mounts
            .into_iter()
            .map(|(dest, readonly)| Preopen { guest: dest.into(), host: dest.into(), readonly });
        WasiContext { args: args.to_vec(), env, preopens: std::iter::once(root).chain(mounts).collect() }
    }

    /// Creates WasmEdge's WASI host module for this context.
    #[cfg(feature = "engine")]
    pub fn create_module(&self) -> anyhow::Result<wasmedge_sdk::wasi::WasiModule> {
        use anyhow::Context;
        let preopens: Vec<String> = self.preopens.iter().map(Preopen::to_wasmedge).collect();
        wasmedge_sdk::wasi::WasiModule::create(
            Some(self.args.iter().map(String::as_str).collect()),
            Some(self.env.iter().map(String::as_str).collect()),
            Some(preopens.iter().map(String::as_str).collect()),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("creating the WASI module")
    }
}

impl Preopen {
    /// WasmEdge's `GUEST:HOST[:readonly]` form.
    #[cfg(feature = "engine")]
    fn to_wasmedge(&self) -> String {
        let ro = if self.readonly { ":readonly" } else { "" };
        format!("{}:{}{ro}", self.guest.display(), self.host.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_and_env_pass_through_and_cwd_becomes_pwd() {
        let ctx = WasiContext::from_process(&strings(&["/app.wasm", "a"]), &strings(&["A=1"]), "/work", false, []);
        assert_eq!(ctx.args, strings(&["/app.wasm", "a"]));
        assert_eq!(ctx.env, strings(&["A=1", "PWD=/work"]));
    }

    #[test]
    fn explicit_pwd_is_kept() {
        let ctx = WasiContext::from_process(&[], &strings(&["PWD=/x"]), "/work", false, []);
        assert_eq!(ctx.env, strings(&["PWD=/x"]));
    }

    #[test]
    fn root_and_each_mount_are_preopened() {
        let ctx = WasiContext::from_process(&[], &[], "/", false, [("/data", false), ("/etc/conf", true)]);
        let forms: Vec<String> = ctx.preopens.iter().map(Preopen::to_wasmedge).collect();
        assert_eq!(forms, strings(&["/:/", "/data:/data", "/etc/conf:/etc/conf:readonly"]));
    }

    #[test]
    fn a_read_only_root_is_a_read_only_preopen() {
        let ctx = WasiContext::from_process(&[], &[], "/", true, [("/tmp", false)]);
        let forms: Vec<String> = ctx.preopens.iter().map(Preopen::to_wasmedge).collect();
        assert_eq!(forms, strings(&["/:/:readonly", "/tmp:/tmp"]));
    }
}
