//! containerd through `ctr` (and Docker through `docker load`): import an image, run it with the
//! WasmEdge shim, read an image's blobs back.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::util::{output, stderr_as_stdio};

pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_NAMESPACE: &str = "default";
pub const RUNTIME: &str = "io.containerd.wasmedge.v1";
pub const PLATFORM: &str = "wasi/wasm";

/// A containerd, by socket and namespace.
#[derive(Clone, Debug)]
pub struct Ctr {
    pub address: String,
    pub namespace: String,
}

impl Ctr {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.address).arg("--namespace").arg(&self.namespace);
        cmd
    }

    /// `ctr image import` of an OCI-layout tarball; ctr's table of what it imported is only
    /// shown when the import fails.
    pub fn import(&self, tar: &Path) -> Result<()> {
        let out = output(self.command().args(["image", "import", "--platform", PLATFORM]).arg(tar))
            .context("cannot run ctr (is containerd's ctr on PATH?)")?;
        if !out.status.success() {
            eprint!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            bail!("ctr image import failed ({}) at {}", out.status, self.address);
        }
        Ok(())
    }

    /// `ctr run --rm` of `image` with the WasmEdge shim, stdio inherited (stdin open, as a
    /// terminal would leave it). `process_args`, when given, replace the whole argv, entrypoint
    /// included (that is what ctr does with arguments). Returns the module's exit code.
    pub fn run(&self, image: &str, id: &str, process_args: &[String], env: &[String]) -> Result<i32> {
        let mut cmd = self.command();
        cmd.args(["run", "--rm", "--runtime", RUNTIME, "--platform", PLATFORM]);
        for e in env {
            cmd.arg("--env").arg(e);
        }
        cmd.arg(image).arg(id).args(process_args);
        let status = cmd.status().context("cannot run ctr (is containerd's ctr on PATH?)")?;
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// A blob of the content store.
    pub fn content(&self, digest: &str) -> Result<Vec<u8>> {
        let out = output(self.command().args(["content", "get", digest]))?;
        if !out.status.success() {
            bail!("ctr content get {digest}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out.stdout)
    }

    /// (media type, digest) of the image `reference` in containerd.
    pub fn image_target(&self, reference: &str) -> Result<(String, String)> {
        let out = output(self.command().args(["image", "ls"]).arg(format!("name=={reference}")))?;
        if !out.status.success() {
            bail!("ctr image ls at {}: {}", self.address, String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 3 && cols[0] == reference {
                return Ok((cols[1].to_string(), cols[2].to_string()));
            }
        }
        bail!("no image {reference} in containerd at {} (namespace {})", self.address, self.namespace)
    }
}

/// `docker load` of a docker-archive tarball.
pub fn docker_load(tar: &Path) -> Result<()> {
    let status = Command::new("docker")
        .arg("load")
        .arg("--input")
        .arg(tar)
        .stdin(Stdio::null())
        .stdout(stderr_as_stdio())
        .status()
        .context("cannot run docker")?;
    if !status.success() {
        bail!("docker load failed ({status})");
    }
    Ok(())
}
