//! A private dockerd on a private containerd (common::Containerd), with the containerd image
//! store, no iptables and no bridge, its data and exec roots in a temp dir: the Docker door of
//! test/e2e_docker.rs and test/e2e_registry.rs.

use super::*;

pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);

/// A private dockerd on a private containerd. Dropped before its containerd (field order).
pub struct Docker {
    pub dir: tempfile::TempDir,
    daemon: Child,
    pub containerd: Containerd,
}

impl Docker {
    pub fn start() -> Docker {
        let containerd = Containerd::start();
        // Short path: the socket path must fit in sun_path.
        let dir = tempfile::Builder::new().prefix("e2e-dkr-").tempdir_in("/tmp").unwrap();
        let config = dir.path().join("daemon.json");
        fs::write(&config, r#"{"features": {"containerd-snapshotter": true}}"#).unwrap();
        let log = fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let daemon = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.path().join("docker.sock").display()))
            .arg("--containerd")
            .arg(containerd.sock())
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd (run the tests in the dev root: make test)");
        let mut docker = Docker { dir, daemon, containerd };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = docker.daemon.try_wait().unwrap() {
                panic!("dockerd exited early ({status}):\n{}", docker.log());
            }
            if matches!(exec(&mut docker.command(&["version"]), None, Duration::from_secs(5)), Ok(Out { code: 0, .. })) {
                return docker;
            }
            assert!(Instant::now() < deadline, "dockerd not ready after 30s:\n{}", docker.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn with(images: &[&Path]) -> Docker {
        let docker = Docker::start();
        for tar in images {
            docker.ok(&["load", "-i", tar.to_str().unwrap()]);
        }
        docker
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("--host").arg(format!("unix://{}", self.dir.path().join("docker.sock").display())).args(args);
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Out {
        exec_bounded(&mut self.command(args), None, DOCKER_TIMEOUT)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert_eq!(out.code, 0, "docker {args:?} failed: {out:#?}");
        out.stdout
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name]).trim().to_string()
    }

    pub fn wait_status(&self, name: &str, status: &str) {
        wait_until(&format!("{name} to be {status}"), Duration::from_secs(30), || self.inspect(name, "{{.State.Status}}") == status);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- dockerd log (tail) ---\n{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
        if matches!(self.daemon.try_wait(), Ok(None)) {
            let ids = exec(&mut self.command(&["ps", "-aq"]), None, Duration::from_secs(15)).map(|o| o.stdout).unwrap_or_default();
            for id in ids.lines() {
                let _ = exec(&mut self.command(&["rm", "-f", id]), None, Duration::from_secs(30));
            }
        }
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        if wait_timeout(&mut self.daemon, Duration::from_secs(15)).is_none() {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
        let dir = format!("{}/", self.dir.path().display());
        for mount in mount_points().iter().rev().filter(|m| m.starts_with(&dir)) {
            let path = std::ffi::CString::new(mount.as_str()).unwrap();
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        // Then the containerd field drops: it stops the daemon and any shim left.
    }
}
