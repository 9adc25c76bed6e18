//! The shim's runtime options. containerd hands a runtime other than runc its options as
//! `runtimeoptions.v1.Options` (`ConfigPath` or `ConfigBody` in containerd's config, or
//! `ctr run --runtime-config-path`); they point at a TOML file like:
//!
//! ```toml
//! time_limit = "30s"      # default wall-clock limit per container; "0" = none (default)
//! aot = true              # compile modules ahead of time and cache them (default true)
//! aot_dir = "/var/lib/containerd-shim-wasmedge/aot"
//! aot_max_bytes = 2147483648
//! compile_memory_bytes = 4294967296  # the compile sandbox's memory bound (default 4 GiB)
//! compile_timeout = "15m"           # the compile sandbox's wall-clock bound (default 15m)
//! aot_fallback = "interpreter"      # when a compile fails: "interpreter" (default) or "fail"
//! SystemdCgroup = true    # cgroupsPath is systemd's slice:prefix:name (runc's option of that name)
//! ```
//!
//! containerd decodes a runtime's `options` table into `runtimeoptions.v1.Options` for every
//! runtime type but runc's, so `SystemdCgroup` is read from this file, not from that table.
use crate::launch::plan::parse_duration;
use crate::engine::{EngineOptions, DEFAULT_AOT_MAX_BYTES};
use anyhow::{Context, Result};
use containerd_shim::protos::protobuf::{well_known_types::any::Any, CodedInputStream};
use serde::Deserialize;
use std::path::PathBuf;

const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    time_limit: Option<String>,
    aot: Option<bool>,
    aot_dir: Option<PathBuf>,
    aot_max_bytes: Option<u64>,
    compile_memory_bytes: Option<u64>,
    compile_timeout: Option<String>,
    aot_fallback: Option<String>,
    #[serde(rename = "SystemdCgroup")]
    systemd_cgroup: Option<bool>,
}

/// The options of one container's create.
#[derive(Debug, Default, PartialEq)]
pub struct RuntimeOptions {
    pub engine: EngineOptions,
    /// The spec's cgroupsPath is systemd's `slice:prefix:name` (see [`crate::launch::cgroup`]).
    pub systemd_cgroup: bool,
}

/// The options of a create request; none gives the documented defaults.
pub fn runtime_options(options: Option<&Any>) -> Result<RuntimeOptions> {
    let Some(any) = options.filter(|a| !a.value.is_empty()) else { return Ok(RuntimeOptions::default()) };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != RUNTIME_OPTIONS_TYPE {
        // Some clients send runc's options to every runtime; they say nothing to this shim.
        log::warn!("ignoring runtime options of type {:?} (this shim reads {RUNTIME_OPTIONS_TYPE})", any.type_url);
        return Ok(RuntimeOptions::default());
    }
    let (path, body) = decode_runtime_options(&any.value).context("malformed runtime options")?;
    let text = if !body.is_empty() {
        String::from_utf8(body).context("runtime options ConfigBody is not UTF-8")?
    } else if !path.is_empty() {
        std::fs::read_to_string(&path).with_context(|| format!("reading runtime options {path}"))?
    } else {
        return Ok(RuntimeOptions::default());
    };
    parse(&text).context("malformed runtime options")
}

fn parse(text: &str) -> Result<RuntimeOptions> {
    // containerd shows a create error on one line; TOML's own message spans several.
    let file: FileOptions = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |span| span.start).min(text.len());
        let line = text[..at].matches('\n').count() + 1;
        let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
        anyhow::anyhow!("TOML parse error at line {line}, column {column}: {}", e.message().trim().replace('\n', " "))
    })?;
    let mut options = EngineOptions::default();
    if let Some(limit) = &file.time_limit {
        let limit = parse_duration(limit).context("time_limit")?;
        options.limits.time_limit = (!limit.is_zero()).then_some(limit);
    }
    if file.aot == Some(false) {
        options.aot_dir = None;
    } else if let Some(dir) = file.aot_dir {
        options.aot_dir = Some(dir);
    }
    options.aot_max_bytes = file.aot_max_bytes.unwrap_or(DEFAULT_AOT_MAX_BYTES);
    if let Some(bytes) = file.compile_memory_bytes {
        options.compile.memory_bytes = bytes;
    }
    if let Some(timeout) = &file.compile_timeout {
        options.compile.timeout = parse_duration(timeout).context("compile_timeout")?;
    }
    options.compile.interpret_on_failure = match file.aot_fallback.as_deref() {
        None | Some("interpreter") => true,
        Some("fail") => false,
        Some(other) => anyhow::bail!("aot_fallback is \"interpreter\" or \"fail\", not {other:?}"),
    };
    Ok(RuntimeOptions { engine: options, systemd_cgroup: file.systemd_cgroup.unwrap_or(false) })
}

/// `runtimeoptions.v1.Options { type_url = 1; config_path = 2; config_body = 3 }`: not among
/// the containerd-shim crate's protos, and three fields do not earn a code generator.
fn decode_runtime_options(bytes: &[u8]) -> Result<(String, Vec<u8>)> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), Vec::new());
    while let Some(tag) = input.read_raw_tag_or_eof()? {
        match tag >> 3 {
            2 => path = input.read_string()?,
            3 => body = input.read_bytes()?,
            _ => input.skip_field(containerd_shim::protos::protobuf::rt::WireType::new(tag & 7).context("bad wire type")?)?,
        }
    }
    Ok((path, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::CodedOutputStream;
    use std::time::Duration;

    fn any(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "runtimeoptions.v1.Options").unwrap();
            out.write_string(2, path).unwrap();
            out.write_bytes(3, body.as_bytes()).unwrap();
            out.flush().unwrap();
        }
        Any { type_url: "runtimeoptions.v1.Options".into(), value, ..Default::default() }
    }

    #[test]
    fn no_options_give_the_defaults() {
        assert_eq!(runtime_options(None).unwrap(), RuntimeOptions::default());
    }

    #[test]
    fn config_body_sets_the_defaults() {
        let o = runtime_options(Some(&any("", "time_limit = \"30s\"\naot = false\n"))).unwrap().engine;
        assert_eq!(o.limits.time_limit, Some(Duration::from_secs(30)));
        assert_eq!(o.aot_dir, None);
    }

    #[test]
    fn config_path_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wasmedge.toml");
        std::fs::write(&file, "aot_dir = \"/cache\"\naot_max_bytes = 1000\n").unwrap();
        let o = runtime_options(Some(&any(file.to_str().unwrap(), ""))).unwrap().engine;
        assert_eq!(o.aot_dir, Some(PathBuf::from("/cache")));
        assert_eq!(o.aot_max_bytes, 1000);
    }

    #[test]
    fn malformed_options_are_refused_with_the_reason() {
        let err = runtime_options(Some(&any("", "time_limit = 30\n"))).unwrap_err();
        assert!(format!("{err:#}").starts_with("malformed runtime options"), "{err:#}");
        let err = runtime_options(Some(&any("", "colour = \"blue\"\n"))).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        let garbage = Any { type_url: RUNTIME_OPTIONS_TYPE.into(), value: vec![0xff, 0xff, 0xff], ..Default::default() };
        assert!(runtime_options(Some(&garbage)).is_err());
    }

    #[test]
    fn foreign_option_types_are_ignored() {
        let runc = Any { type_url: "containerd.runc.v1.Options".into(), value: vec![8, 1], ..Default::default() };
        assert_eq!(runtime_options(Some(&runc)).unwrap(), RuntimeOptions::default());
    }

    #[test]
    fn systemd_cgroup_is_runcs_option_name() {
        assert!(runtime_options(Some(&any("", "SystemdCgroup = true\n"))).unwrap().systemd_cgroup);
        assert!(!runtime_options(Some(&any("", "aot = true\n"))).unwrap().systemd_cgroup);
        let err = runtime_options(Some(&any("", "SystemdCgroup = \"yes\"\n"))).unwrap_err();
        assert!(format!("{err:#}").contains("expected a boolean"), "{err:#}");
    }

    #[test]
    fn compile_bounds_and_fallback() {
        let engine = runtime_options(Some(&any("", "compile_memory_bytes = 1000\ncompile_timeout = \"15m\"\naot_fallback = \"fail\"\n"))).unwrap().engine;
        assert_eq!(engine.compile.memory_bytes, 1000);
        assert_eq!(engine.compile.timeout, Duration::from_secs(900));
        assert!(!engine.compile.interpret_on_failure);
        assert!(runtime_options(Some(&any("", "aot = true\n"))).unwrap().engine.compile.interpret_on_failure);
        let err = runtime_options(Some(&any("", "aot_fallback = \"maybe\"\n"))).unwrap_err();
        assert!(format!("{err:#}").contains("aot_fallback"), "{err:#}");
    }
}
