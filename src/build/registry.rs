//! A registry, over the OCI distribution API (oci-client, rustls): who we are (docker's
//! config.json, its credential helpers, or `--username` + `--password-stdin`), whom we trust
//! (the system roots plus `--ca`), and pushing and reading images.
//!
//! Pushes go bottom up, the tag last: layers and configs (skipped when the registry has them),
//! the platforms' manifests by digest, then the tag's index or manifest. A push that fails on
//! the way leaves no tag behind, only blobs nothing names, and a retry sends what is missing.
//! Reads are bounded: documents by [`MAX_DOCUMENT`], blobs by their descriptor's size, and every
//! digest is checked.

use std::io::{BufRead, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::Engine as _;
use clap::Args;
use futures_util::StreamExt as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use containerd_shim_wasmedge::progress::{human, Progress};

/// Indexes, manifests and configs are small; anything bigger is not one.
pub const MAX_DOCUMENT: u64 = 4 << 20;
/// Media types a tag may name.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Pieces of a blob handed to the client; it sends each as one chunk (PATCH).
const CHUNK: usize = 4 << 20;

/// How to reach a registry, for `push`, `pull`, `inspect` and `build --push`.
#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// A CA certificate (PEM) to trust besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Plain HTTP, for a registry on this machine only (localhost, 127.0.0.0/8, ::1).
    #[arg(long)]
    pub insecure: bool,
    /// User name for the registry; the password is read from stdin (--password-stdin). Without
    /// it, credentials come from ~/.docker/config.json (auths and credential helpers).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password of --username from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// One repository of one registry, and how to talk to it.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    /// The image as named, tag included.
    reference: Reference,
    runtime: tokio::runtime::Runtime,
}

/// What a push sends: blobs (layers and configs), manifests by digest, and what the tag names.
pub struct Upload {
    /// `(digest, data)`, layers and configs.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// `(digest, media type, data)` of manifests under the tag's index.
    pub manifests: Vec<(String, String, Vec<u8>)>,
    /// `(media type, data)` of the index or manifest the tag names.
    pub target: (String, Vec<u8>),
}

/// What a push did.
#[derive(Debug, Default)]
pub struct Pushed {
    pub uploaded: usize,
    pub skipped: usize,
    pub bytes: u64,
    /// `sha256:` of what the tag names.
    pub digest: String,
}

impl Registry {
    /// A client for the repository of `reference` (normalized, e.g. `localhost:5000/hello:v1`).
    pub fn connect(reference: &str, args: &RegistryArgs) -> Result<Registry> {
        let reference: Reference = reference.parse().with_context(|| format!("invalid image reference {reference:?}"))?;
        ensure!(reference.digest().is_none(), "{reference}: give a tag, not a digest");
        let host = reference.resolve_registry().to_string();
        if args.insecure && !is_loopback(&host) {
            bail!("--insecure (plain HTTP) is only for a registry on this machine, not {host}");
        }
        let mut config = ClientConfig {
            protocol: if args.insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            read_timeout: Some(std::time::Duration::from_secs(60)),
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            ..Default::default()
        };
        if let Some(ca) = &args.ca {
            let data = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
            ensure!(
                String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----"),
                "--ca {} is not a PEM certificate",
                ca.display()
            );
            config.extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
        }
        // rustls without a built-in choice of crypto (the static musl build wants ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::try_from(config).context("setting up the registry client")?;
        let auth = match &args.username {
            Some(user) => RegistryAuth::Basic(user.clone(), password_from_stdin()?),
            None => docker_config_auth(&host)?,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Every request of the client to this registry then carries the credentials.
        runtime.block_on(client.store_auth_if_needed(&host, &auth));
        Ok(Registry { client, auth, reference, runtime })
    }

    fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }

    /// What the tag names (or the manifest `digest`), and its digest, checked.
    pub fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String)> {
        let reference = digest.map_or_else(|| self.reference.clone(), |d| self.at(d));
        let (data, got) = self
            .runtime
            .block_on(self.client.pull_manifest_raw(&reference, &self.auth, MANIFEST_TYPES))
            .map_err(|e| registry_error(&reference, e))?;
        ensure!(data.len() as u64 <= MAX_DOCUMENT, "{reference}: the manifest is larger than {}", human(MAX_DOCUMENT));
        let actual = sha256(&data);
        ensure!(got == actual, "{reference}: the registry says the manifest is {got}, it is {actual}");
        if let Some(d) = digest {
            ensure!(d == actual, "{reference}: the manifest's digest is {actual}");
        }
        Ok((data.to_vec(), actual))
    }

    /// The blob `digest`, at most `size` bytes (else [`MAX_DOCUMENT`]), its digest checked.
    pub fn blob(&self, digest: &str, size: Option<u64>) -> Result<Vec<u8>> {
        let limit = size.unwrap_or(MAX_DOCUMENT);
        let reference = self.at(digest);
        let data = self.runtime.block_on(async {
            let mut stream = self.client.pull_blob_stream(&reference, digest).await?;
            let mut data = Vec::new();
            let mut progress = (limit > CHUNK as u64).then(|| Progress::bytes(&format!("pull {}", short(digest)), Some(limit)));
            while let Some(bytes) = stream.next().await {
                let bytes = bytes?;
                if (data.len() + bytes.len()) as u64 > limit {
                    return Err(anyhow!("blob {digest} is larger than the {} it is said to be", human(limit)));
                }
                data.extend_from_slice(&bytes);
                if let Some(p) = progress.as_mut() {
                    p.advance(bytes.len() as u64);
                }
            }
            if let Some(p) = progress {
                p.finish();
            }
            Ok::<_, anyhow::Error>(data)
        });
        let data = data.map_err(|e| anyhow!("{reference}: {e:#}"))?;
        ensure!(sha256(&data) == digest, "blob {digest} does not match its digest");
        if let Some(size) = size {
            ensure!(data.len() as u64 == size, "blob {digest} is {} bytes, not {size}", data.len());
        }
        Ok(data)
    }

    /// Pushes `upload` under the tag: blobs the registry lacks, in chunks, then manifests.
    pub fn push(&self, upload: &Upload) -> Result<Pushed> {
        let mut pushed = Pushed::default();
        for (digest, data) in &upload.blobs {
            let at = self.at(digest);
            let exists = self
                .runtime
                .block_on(self.client.blob_exists(&at, digest))
                .map_err(|e| registry_error(&self.reference, e))?;
            if exists {
                pushed.skipped += 1;
                continue;
            }
            let progress = Arc::new(Mutex::new(Some(Progress::bytes(&format!("push {}", short(digest)), Some(data.len() as u64)))));
            let counted = progress.clone();
            let pieces: Vec<bytes::Bytes> = data.chunks(CHUNK).map(bytes::Bytes::copy_from_slice).collect();
            // Each piece is counted as the client takes it to send.
            let stream = futures_util::stream::iter(pieces).map(move |piece| {
                if let Some(p) = counted.lock().unwrap().as_mut() {
                    p.advance(piece.len() as u64);
                }
                Ok(piece)
            });
            self.runtime
                .block_on(self.client.push_blob_stream(&at, stream, digest, Some(data.len() as u64)))
                .map_err(|e| registry_error(&self.reference, e))?;
            if let Some(p) = progress.lock().unwrap().take() {
                p.finish();
            }
            pushed.uploaded += 1;
            pushed.bytes += data.len() as u64;
        }
        for (digest, media_type, data) in &upload.manifests {
            self.push_manifest(&self.at(digest), media_type, data)?;
        }
        let (media_type, data) = &upload.target;
        self.push_manifest(&self.reference, media_type, data)?;
        pushed.digest = sha256(data);
        Ok(pushed)
    }

    fn push_manifest(&self, reference: &Reference, media_type: &str, data: &[u8]) -> Result<()> {
        let content_type = media_type.parse().with_context(|| format!("media type {media_type:?}"))?;
        self.runtime
            .block_on(self.client.push_manifest_raw(reference, data.to_vec(), content_type))
            .map_err(|e| registry_error(reference, e))?;
        Ok(())
    }
}

/// An error of the client, on one line, with the registry's answer.
fn registry_error(reference: &Reference, e: oci_client::errors::OciDistributionError) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    anyhow!("{}: {}", reference.resolve_registry(), text.replace('\n', " "))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// `sha256:0123456789ab`: enough of a digest to tell blobs apart in progress lines.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// `localhost`, `127.x.y.z` or `::1`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The first line of stdin: a caller need not close it.
fn password_from_stdin() -> Result<String> {
    let mut password = String::new();
    std::io::stdin().lock().take(4096).read_line(&mut password).context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    ensure!(!password.is_empty(), "--password-stdin: stdin gave no password");
    Ok(password)
}

/// Docker's client configuration, the parts about registries.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials docker would use for `host`: a credential helper's (`credHelpers`, else
/// `credsStore`), else `auths`; none at all is anonymous.
fn docker_config_auth(host: &str) -> Result<RegistryAuth> {
    let path = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".docker/config.json"),
            None => return Ok(RegistryAuth::Anonymous),
        },
    };
    let config = match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerConfig::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    auth_for(&config, host, &path)
}

fn auth_for(config: &DockerConfig, host: &str, path: &Path) -> Result<RegistryAuth> {
    // Docker Hub is stored under its v1 index address.
    let keys: Vec<String> = if matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()]
    } else {
        vec![host.into(), format!("https://{host}"), format!("http://{host}")]
    };
    let helper = keys.iter().find_map(|k| config.cred_helpers.get(k)).or(config.creds_store.as_ref());
    if let Some(helper) = helper {
        if let Some(auth) = credential_helper(helper, &keys[0])? {
            return Ok(auth);
        }
    }
    let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let Some(encoded) = &entry.auth else { return Ok(RegistryAuth::Anonymous) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .with_context(|| format!("{}: the auth of {host} is not base64 of USER:PASSWORD", path.display()))?;
    let (user, password) = decoded
        .split_once(':')
        .with_context(|| format!("{}: the auth of {host} is not USER:PASSWORD", path.display()))?;
    Ok(RegistryAuth::Basic(user.into(), password.into()))
}

/// `docker-credential-NAME get` for `server`; `None` when it has no credentials for it.
fn credential_helper(name: &str, server: &str) -> Result<Option<RegistryAuth>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the credential helper {program}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("a piped stdin");
        stdin.write_all(server.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string() + String::from_utf8_lossy(&out.stderr).trim();
        if said.contains("credentials not found") {
            return Ok(None);
        }
        bail!("{program} get {server}: {said}");
    }
    let answer: Answer = serde_json::from_slice(&out.stdout).with_context(|| format!("{program} gave no credentials JSON"))?;
    Ok(Some(if answer.username == "<token>" {
        RegistryAuth::Bearer(answer.secret)
    } else {
        RegistryAuth::Basic(answer.username, answer.secret)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_loopback() {
        for host in ["localhost", "localhost:5000", "127.0.0.1:443", "127.1.2.3", "[::1]:5000"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1:5000", "localhost.example.com", "[fe80::1]:5000"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn docker_config_auths_and_hub_keys() {
        let config: DockerConfig = serde_json::from_str(
            r#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}}"#,
        )
        .unwrap();
        let path = Path::new("config.json");
        let basic = |a: RegistryAuth| match a {
            RegistryAuth::Basic(u, p) => (u, p),
            other => panic!("{other:?}"),
        };
        assert_eq!(basic(auth_for(&config, "127.0.0.1:5000", path).unwrap()), ("user".into(), "pa:ss".into()));
        assert_eq!(basic(auth_for(&config, "docker.io", path).unwrap()), ("hub".into(), "pw".into()));
        assert!(matches!(auth_for(&config, "ghcr.io", path).unwrap(), RegistryAuth::Anonymous));
        let bad: DockerConfig = serde_json::from_str(r#"{"auths": {"r.io": {"auth": "%%%"}}}"#).unwrap();
        assert!(auth_for(&bad, "r.io", path).is_err());
    }
}
