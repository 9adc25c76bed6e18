//! End-to-end tests of registries: `wasmedge-image push` to a real registry (Debian's
//! docker-registry, distribution 2.8) started here on a free loopback port with TLS (a CA made
//! here with openssl) and htpasswd basic auth, then the one pushed tag through every door: ctr
//! (hosts.toml with the CA), CRI `PullImage` as kubelet sends it followed by a pod on handler
//! `wasmedge`, and Docker with and without `--platform`. Bad input fails on one line and leaves
//! no tag. Needs docker-registry, htpasswd, openssl, containerd, dockerd and root (the dev root).

mod common;

use base64::Engine as _;
use common::cri::{self, busybox_image, container, containerd_in, cri_config, log_messages, Cri, BUSYBOX_IMAGE, CRI_NAMESPACE};
use common::docker::{Docker, DOCKER_TIMEOUT};
use common::*;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USER: &str = "e2e";
const PASSWORD: &str = "e2e-secret";
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// A docker-registry of this test: its CA, certificate, htpasswd, config and storage in a temp
/// dir, on a free port of 127.0.0.1. Killed on drop.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    daemon: Option<Child>,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::Builder::new().prefix("e2e-reg-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path();
        let ok = |cmd: &mut Command| {
            let out = exec_bounded(cmd, None, Duration::from_secs(30));
            assert_eq!(out.code, 0, "{cmd:?}: {out:#?}");
            out.stdout
        };
        // A CA, and a certificate it signs for 127.0.0.1 and localhost.
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        ok(Command::new("openssl").args(["req", "-x509"]).args(ec).args(["-days", "2", "-subj", "/CN=e2e registry CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout").arg(d.join("ca.key")).arg("-out").arg(d.join("ca.crt")));
        ok(Command::new("openssl").arg("req").args(ec).args(["-subj", "/CN=localhost"])
            .arg("-keyout").arg(d.join("server.key")).arg("-out").arg(d.join("server.csr")));
        fs::write(d.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n").unwrap();
        ok(Command::new("openssl").args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in").arg(d.join("server.csr")).arg("-CA").arg(d.join("ca.crt")).arg("-CAkey").arg(d.join("ca.key"))
            .arg("-extfile").arg(d.join("server.ext")).arg("-out").arg(d.join("server.crt")));
        let htpasswd = ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
        fs::write(d.join("htpasswd"), htpasswd).unwrap();
        fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n\
                 auth:\n  htpasswd:\n    realm: e2e\n    path: {d}/htpasswd\n",
                data = d.join("data").display(),
                d = d.display()
            ),
        )
        .unwrap();
        // containerd's hosts directory (ctr --hosts-dir, CRI's config_path): the CA for this host.
        let hosts = d.join("hosts").join(format!("127.0.0.1:{port}"));
        fs::create_dir_all(&hosts).unwrap();
        fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"https://127.0.0.1:{port}\"\n\n[host.\"https://127.0.0.1:{port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
                d.join("ca.crt").display()
            ),
        )
        .unwrap();
        let mut registry = Registry { dir, port, daemon: None };
        registry.spawn();
        registry
    }

    /// Starts (or restarts) the registry process and waits until it accepts connections.
    fn spawn(&mut self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("registry.log")).unwrap();
        let daemon = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start docker-registry (run the tests in the dev root: make test)");
        self.daemon = Some(daemon);
        let port = self.port;
        wait_until("the registry to listen", Duration::from_secs(30), || {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("docker-registry exited early ({status}):\n{}", self.log());
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// `HOST/e2e/NAME:TAG`.
    fn reference(&self, name_tag: &str) -> String {
        format!("{}/e2e/{name_tag}", self.host())
    }

    /// The tags of repository `e2e/NAME`, as the registry stores them.
    fn tags(&self, name: &str) -> Vec<String> {
        let dir = self.dir.path().join(format!("data/docker/registry/v2/repositories/e2e/{name}/_manifests/tags"));
        let mut tags: Vec<String> =
            fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        tags.sort();
        tags
    }

    /// `wasmedge-image ARGS --ca CA --username USER --password-stdin` with `password`.
    fn tool(&self, args: &[&str], password: &str) -> Out {
        let mut cmd = self.tool_command(args);
        exec_bounded(&mut cmd, Some(&format!("{password}\n")), PUSH_TIMEOUT)
    }

    fn tool_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(IMAGE_TOOL);
        cmd.args(args).arg("--ca").arg(self.ca()).args(["--username", USER, "--password-stdin"]);
        cmd
    }

    /// Pushes the image file `src` as `reference`; the push's summary line.
    fn push(&self, src: &Path, reference: &str) -> String {
        let out = self.tool(&["push", src.to_str().unwrap(), reference], PASSWORD);
        assert_eq!(out.code, 0, "push failed: {out:#?}\n{}", self.log());
        assert!(out.stdout.starts_with(&format!("{reference} sha256:")), "{out:#?}");
        out.stderr.lines().find(|l| l.contains(" pushed ")).unwrap_or_default().to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- registry log ---\n{}", self.log());
        }
        self.kill();
    }
}

/// One failure line: `wasmedge-image: error: ...`, and a non-zero exit.
fn assert_one_line_error(out: &Out, says: &[&str]) {
    assert_ne!(out.code, 0, "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("wasmedge-image: error:")).collect();
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(!out.stderr.contains("Caused by"), "{out:#?}");
    let line = lines[0].to_lowercase();
    assert!(says.iter().any(|s| line.contains(s)), "{:?} says none of {says:?}", lines[0]);
}

#[test]
fn a_pushed_tag_runs_through_ctr_and_a_second_push_uploads_nothing() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    // One layer and three configs (wasi/wasm, linux/amd64, linux/arm64).
    let first = registry.push(hello_image(), &reference);
    assert!(first.contains("4 blobs uploaded") && first.ends_with("0 already there"), "{first}");
    let again = registry.push(hello_image(), &reference);
    assert!(again.contains("0 blobs uploaded") && again.ends_with("4 already there"), "{again}");
    assert_eq!(registry.tags("hello"), ["v1"]);

    // inspect of the remote tag: every platform, the same layer.
    let out = registry.tool(&["inspect", "--json", &reference], PASSWORD);
    assert_eq!(out.code, 0, "{out:#?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let images = report["images"].as_array().unwrap();
    let platforms: Vec<&str> = images.iter().map(|i| i["platform"].as_str().unwrap()).collect();
    assert_eq!(platforms, ["wasi/wasm", "linux/amd64", "linux/arm64"]);
    assert!(images.iter().all(|i| i["layers"] == images[0]["layers"] && i["wasm"] == true), "{report:#}");

    // pull of one platform: the tarball ctr imports and runs.
    let pulled = scratch_dir().join("e2e-registry-pulled.tar");
    let out = registry.tool(&["pull", &reference, "--out", pulled.to_str().unwrap()], PASSWORD);
    assert_eq!(out.code, 0, "{out:#?}");
    let containerd = Containerd::start();
    containerd.import(&pulled);
    let out = containerd.run_image(&unique_id("pulled"), &reference, &[], &["cat", "/data/greeting.txt"], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, GREETING), "{out:#?}");

    // ctr's own pull, trusting the CA through hosts.toml, then the shim runs the tag.
    let other = registry.reference("hello:ctr");
    registry.push(hello_image(), &other);
    let hosts = registry.hosts_dir();
    let user = format!("{USER}:{PASSWORD}");
    containerd.ctr_ok(&["image", "pull", "--hosts-dir", hosts.to_str().unwrap(), "--user", &user, "--platform", PLATFORM, &other]);
    let out = containerd.run_image(&unique_id("ctr-pull"), &other, &[], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "{out:#?}");

    // build --push: straight from a module to the registry.
    let built = registry.reference("built:v1");
    let out = registry.tool(&["build", hello_wasm().to_str().unwrap(), "--tag", "e2e-built:v1", "--push", &built], PASSWORD);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(registry.tags("built"), ["v1"]);
}

#[test]
fn a_cri_pull_as_kubelet_does_runs_a_pod_on_the_pushed_tag() {
    let registry = Registry::start();
    let reference = registry.reference("hello:cri");
    registry.push(hello_image(), &reference);
    let hosts = registry.hosts_dir();
    let containerd = Containerd::start_with_config(|root, state, sock| {
        format!(
            "{}\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"{}\"\n",
            cri_config(root, state, sock),
            hosts.display()
        )
    });
    let pause = busybox_image();
    containerd_in(&containerd, CRI_NAMESPACE, &["image", "import", "--platform", "linux/amd64", pause.to_str().unwrap()]);
    let cri = Cri::connect(&containerd.sock());
    wait_until("CRI to know the pause image", Duration::from_secs(15), || {
        let status: cri::ImageStatusResponse =
            cri.ok("ImageStatus", cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: BUSYBOX_IMAGE.into() }) });
        status.image.is_some()
    });
    let logs = tempfile::tempdir().unwrap();
    let pod = cri.run_pod(logs.path(), &format!("/e2e-registry-{}", std::process::id()));

    // kubelet: PullImage with the pod's pull secret and sandbox config, then the image's id.
    let auth = cri::AuthConfig { username: USER.into(), password: PASSWORD.into() };
    let wrong = cri::AuthConfig { username: USER.into(), password: "wrong".into() };
    let pull = |auth: cri::AuthConfig| {
        let request = cri::PullImageRequest {
            image: Some(cri::ImageSpec { image: reference.clone() }),
            auth: Some(auth),
            sandbox_config: Some(pod.config.clone()),
        };
        cri.call::<_, cri::PullImageResponse>("PullImage", request)
    };
    let refused = pull(wrong).expect_err("a pull with a wrong password");
    assert!(refused.message().contains("401") || refused.message().to_lowercase().contains("unauthorized"), "{refused:?}");
    let pulled = pull(auth).unwrap_or_else(|e| panic!("CRI PullImage failed: {e}"));
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");

    let id = pod.start(container("wasm", &pulled.image_ref, &[], &["cat", "/data/greeting.txt"], &pod.namespaces));
    wait_until("the pulled wasm container to exit", Duration::from_secs(60), || cri.status(&id).state == cri::CONTAINER_EXITED);
    let status = cri.status(&id);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"), "{status:?}");
    assert_eq!(log_messages(Path::new(&status.log_path)), vec![format!("stdout: {}", GREETING.trim_end())], "{status:?}");
}

/// The CA in Docker's certs.d for the registry's host, removed again on drop.
struct DockerTrust(PathBuf);

impl DockerTrust {
    fn new(registry: &Registry) -> DockerTrust {
        let dir = PathBuf::from("/etc/docker/certs.d").join(registry.host());
        fs::create_dir_all(&dir).unwrap();
        fs::copy(registry.ca(), dir.join("ca.crt")).unwrap();
        DockerTrust(dir)
    }
}

impl Drop for DockerTrust {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn docker_pulls_the_pushed_tag_and_runs_it_with_and_without_a_platform() {
    let registry = Registry::start();
    // The credentials as `docker login` stores them: wasmedge-image and docker read the same file.
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let auths = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
    fs::write(config.path().join("config.json"), auths.to_string()).unwrap();
    let reference = registry.reference("hello:docker");
    let mut push = Command::new(IMAGE_TOOL);
    push.args(["push", hello_image().to_str().unwrap(), &reference, "--ca"]).arg(registry.ca()).env("DOCKER_CONFIG", config.path());
    let out = exec_bounded(&mut push, None, PUSH_TIMEOUT);
    assert_eq!(out.code, 0, "a push with docker's credentials: {out:#?}");

    let _trust = DockerTrust::new(&registry);
    let docker = Docker::start();
    let docker_cli = |args: &[&str]| {
        let mut cmd = docker.command(args);
        cmd.env("DOCKER_CONFIG", config.path());
        let out = exec_bounded(&mut cmd, None, DOCKER_TIMEOUT);
        assert_eq!(out.code, 0, "docker {args:?}: {out:#?}");
        out.stdout
    };
    docker_cli(&["pull", &reference]);
    let run = |platform: &[&str]| {
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
        args.extend(platform);
        args.extend([reference.as_str(), "cat", "/data/greeting.txt"]);
        docker_cli(&args)
    };
    assert_eq!(run(&[]), GREETING);
    assert_eq!(run(&["--platform", PLATFORM]), GREETING);
}

#[test]
fn bad_input_fails_on_one_line_and_leaves_no_tag() {
    let mut registry = Registry::start();
    let reference = registry.reference("hello:bad");

    let out = registry.tool(&["push", hello_image().to_str().unwrap(), &reference], "wrong-password");
    assert_one_line_error(&out, &["401", "unauthorized", "authentication"]);
    let mut cmd = Command::new(IMAGE_TOOL);
    cmd.args(["push", hello_image().to_str().unwrap(), &reference, "--username", USER, "--password-stdin"]);
    let out = exec_bounded(&mut cmd, Some(&format!("{PASSWORD}\n")), PUSH_TIMEOUT);
    assert_one_line_error(&out, &["certificate", "unknownissuer"]);
    let out = exec_bounded(
        Command::new(IMAGE_TOOL).args(["push", hello_image().to_str().unwrap(), "registry.example.com/e2e/hello:v1", "--insecure"]),
        None,
        PUSH_TIMEOUT,
    );
    assert_one_line_error(&out, &["only for a registry on this machine"]);
    assert!(registry.tags("hello").is_empty(), "{:?}", registry.tags("hello"));

    let missing = registry.reference("hello:missing");
    let pulled = scratch_dir().join("e2e-registry-missing.tar");
    let out = registry.tool(&["pull", &missing, "--out", pulled.to_str().unwrap()], PASSWORD);
    assert_one_line_error(&out, &["manifest unknown", "not found"]);
    assert!(!pulled.exists());
    let out = registry.tool(&["inspect", &missing], PASSWORD);
    assert_one_line_error(&out, &["manifest unknown", "not found"]);

    // A registry that dies mid-push: the push fails and names no tag; once it is back, the same
    // push completes.
    let big = scratch_dir().join("e2e-registry-big.bin");
    let mut noise = vec![0u8; 96 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs::write(&big, noise).unwrap();
    let big_image = pack(hello_wasm(), "docker.io/library/e2e-big:v1", &[format!("{}:/data/noise.bin", big.display())]);
    let big_ref = registry.reference("big:v1");
    let mut push = registry.tool_command(&["push", big_image.to_str().unwrap(), &big_ref]);
    push.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = push.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    }
    let stderr = drain(child.stderr.take().unwrap());
    let _stdout = drain(child.stdout.take().unwrap());
    let uploads = registry.dir.path().join("data/docker/registry/v2/repositories/e2e/big/_uploads");
    wait_until("an upload to the registry to start", Duration::from_secs(60), || {
        fs::read_dir(&uploads).into_iter().flatten().flatten().any(|e| {
            fs::metadata(e.path().join("data")).is_ok_and(|m| m.len() > 0)
        })
    });
    registry.kill();
    let status = wait_timeout(&mut child, PUSH_TIMEOUT).expect("the push to end when the registry died");
    let out = Out { stdout: String::new(), stderr: stderr.join().unwrap(), code: code_of(status) };
    assert_one_line_error(&out, &["error sending request", "connection", "broken pipe", "reset"]);
    assert!(registry.tags("big").is_empty(), "{:?}", registry.tags("big"));
    registry.spawn();
    let retried = registry.push(&big_image, &big_ref);
    assert!(retried.contains("blobs uploaded"), "{retried}");
    assert_eq!(registry.tags("big"), ["v1"]);
    let back = scratch_dir().join("e2e-registry-big-pulled");
    let _ = fs::remove_dir_all(&back);
    let out = registry.tool(&["pull", &big_ref, "--format", "layout", "--out", back.to_str().unwrap()], PASSWORD);
    assert_eq!(out.code, 0, "{out:#?}");
}
