//! AOT compiles, away from the container. The container process reads its module and its
//! cache entry only once it is confined; on a miss it sends the module's bytes on its compile
//! socket to the shim, which executes this binary as `compile` (see [`crate::launch::compile`]).
//!
//! The `compile` process sees the host (it is the shim's child, not the container's): it hashes
//! the bytes, takes the key's lock, has the compile sandbox compile them, stores the entry and
//! answers. It neither parses nor runs the bytes itself.
//!
//! The compile sandbox compiles one module. It is a fork of the `compile` process that, before
//! it reads a byte of the module, goes into a cgroup of its own (memory and CPU bounds), gets
//! new mount, network, IPC and UTS namespaces with nothing but an empty tmpfs as its root, takes
//! the unprivileged uid 65534 with no capabilities, no_new_privs and a seccomp filter, and CPU,
//! file size and open file limits. The module comes in on fd 0 and the compiled module goes out
//! on fd 3, both memfds; the `compile` process kills it when its time is up.
use crate::launch::cgroup;
use crate::engine::aot::{self, AotCache, Outcome};
use crate::engine::{CompileOptions, EngineOptions, PRECOMPILE_ARG};
use crate::protocol::{COMPILE_DONE, COMPILE_FAILED, COMPILE_FD, COMPILE_FOUND, MAX_COMPILE_REASON};
use anyhow::{bail, Context, Result};
use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The compiled module is native code plus the module itself: bounded by a multiple of it.
fn max_output(module: &[u8]) -> u64 {
    64 * module.len() as u64 + (64 << 20)
}
/// The largest module the `compile` process takes.
const MAX_MODULE: u64 = 1 << 30;
/// Below the container's weight (100 on v2, 1024 shares on v1): compiles yield to running work.
const CPU_SHARES: u64 = 256;
/// Where the sandbox writes the compiled module (or why it could not).
const OUTPUT_FD: i32 = 3;
/// The sandbox's user: nobody.
const NOBODY: u32 = 65534;
/// The cgroup every compile sandbox gets a child of.
const CGROUP_PARENT: &str = "/containerd-shim-wasmedge-compile";

/// What a container process keeps of the AOT cache through its confinement: the cache
/// directory, open, to read its entry from, and the compile socket to ask on a miss.
pub struct Aot {
    dir: File,
    cpu: String,
    socket: UnixStream,
    /// Whether a module whose compile failed runs in the interpreter.
    pub interpret_on_failure: bool,
}

impl Aot {
    /// Before confinement: opens the cache (`None` when AOT is off) and takes the compile
    /// socket the shim gave the process.
    pub fn open(options: &EngineOptions) -> Result<Option<Aot>> {
        let Some(dir) = &options.aot_dir else { return Ok(None) };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir_file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        // SAFETY: the shim passes the process its compile socket on this fd (crate::protocol).
        let socket = unsafe { UnixStream::from_raw_fd(COMPILE_FD) };
        let interpret_on_failure = options.compile.interpret_on_failure;
        Ok(Some(Aot { dir: dir_file, cpu: aot::cpu_identity(), socket, interpret_on_failure }))
    }

    /// Once confined: the compiled form of `module`, read from the cache, or compiled by the
    /// sandbox on a miss, through the shim.
    pub fn compiled(&mut self, module: &[u8]) -> Result<(Vec<u8>, Outcome)> {
        let key = aot::cache_key(module, &self.cpu);
        if let Some(bytes) = self.lookup(&key) {
            return Ok((bytes, Outcome::Hit));
        }
        let socket = &mut self.socket;
        // The wait is the sandbox's, bounded by its own timeout: the container's time limit
        // stops while it lasts, so that a short limit does not kill every first compile.
        let paused = TimerPause::start();
        socket.write_all(&(module.len() as u64).to_le_bytes()).and_then(|_| socket.write_all(module)).context("sending the module to the shim for its compile")?;
        let mut status = [0u8];
        socket.read_exact(&mut status).context("waiting for the compile of a cache miss")?;
        drop(paused);
        let outcome = match status[0] {
            COMPILE_DONE => Outcome::Compiled,
            COMPILE_FOUND => Outcome::Hit,
            COMPILE_FAILED => {
                let mut len = [0u8; 4];
                socket.read_exact(&mut len).context("reading why the compile failed")?;
                let len = (u32::from_le_bytes(len) as usize).min(MAX_COMPILE_REASON);
                let mut why = vec![0u8; len];
                socket.read_exact(&mut why).context("reading why the compile failed")?;
                bail!("{}", String::from_utf8_lossy(&why));
            }
            other => bail!("an unknown answer ({other}) to the compile request"),
        };
        match self.lookup(&key) {
            Some(bytes) => Ok((bytes, outcome)),
            None => bail!("the compiled module is not in the cache"),
        }
    }

    fn lookup(&self, key: &str) -> Option<Vec<u8>> {
        let fd = openat(&self.dir, aot::entry_name(key).as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty()).ok()?;
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }
}

/// The wall-clock timer of the time limit, stopped until this is dropped.
struct TimerPause(libc::itimerval);

impl TimerPause {
    fn start() -> TimerPause {
        let stopped: libc::itimerval = unsafe { std::mem::zeroed() };
        let mut left: libc::itimerval = unsafe { std::mem::zeroed() };
        unsafe { libc::setitimer(libc::ITIMER_REAL, &stopped, &mut left) };
        TimerPause(left)
    }
}

impl Drop for TimerPause {
    fn drop(&mut self) {
        // A timer that was not running stays stopped.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &self.0, std::ptr::null_mut()) };
    }
}

/// `compile`'s main, executed by the shim for a container's cache miss with the container's
/// compile socket as stdin and stdout and the container's engine options (JSON) as argument:
/// reads one request, answers it, exits.
pub fn compile_main(args: &[String]) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut socket = unsafe { UnixStream::from_raw_fd(0) };
    let answer = (|| -> Result<Outcome> {
        let options: EngineOptions = serde_json::from_str(args.first().map_or("", String::as_str)).context("reading the engine options")?;
        let dir = options.aot_dir.clone().context("AOT is off")?;
        let cache = AotCache { dir, max_bytes: options.aot_max_bytes };
        let mut len = [0u8; 8];
        socket.read_exact(&mut len).context("reading the module's length")?;
        let module = receive(&mut socket, u64::from_le_bytes(len))?;
        Ok(compiled(&cache, &module, &options.compile, Some(socket.as_fd()))?.1)
    })();
    let mut out = unsafe { File::from_raw_fd(1) };
    let written = match answer {
        Ok(Outcome::Compiled) => out.write_all(&[COMPILE_DONE]),
        // Another process compiled it while this one waited for the lock.
        Ok(Outcome::Hit) => out.write_all(&[COMPILE_FOUND]),
        Err(e) => {
            let why = format!("{e:#}");
            let why = &why.as_bytes()[..why.len().min(MAX_COMPILE_REASON)];
            out.write_all(&[COMPILE_FAILED]).and_then(|_| out.write_all(&(why.len() as u32).to_le_bytes())).and_then(|_| out.write_all(why))
        }
    };
    std::process::exit(i32::from(written.is_err()))
}

/// The module's bytes, copied once into this process's own memory: what is hashed is what the
/// sandbox compiles.
fn receive(socket: &mut UnixStream, len: u64) -> Result<Vec<u8>> {
    if len > MAX_MODULE {
        bail!("the module is {len} bytes, over the {MAX_MODULE} the compiler takes");
    }
    let mut module = vec![0u8; len as usize];
    socket.read_exact(&mut module).context("receiving the module")?;
    Ok(module)
}

/// The compiled form of `module` from the cache, compiling it in the sandbox on a miss. One
/// process compiles a module at a time; the others starting it wait for its entry. A compile
/// for a `caller` (the container's end of its compile socket) stops when the caller is gone.
pub fn compiled(cache: &AotCache, module: &[u8], bounds: &CompileOptions, caller: Option<BorrowedFd>) -> Result<(Vec<u8>, Outcome)> {
    let key = aot::cache_key(module, &aot::cpu_identity());
    if let Some(bytes) = cache.lookup(&key) {
        return Ok((bytes, Outcome::Hit));
    }
    let _lock = cache.lock(&key)?;
    if let Some(bytes) = cache.lookup(&key) {
        return Ok((bytes, Outcome::Hit));
    }
    let bytes = sandboxed(module, bounds, caller)?;
    if !bytes.starts_with(b"\0asm") {
        bail!("the compile sandbox wrote no wasm module");
    }
    cache.store(&key, &bytes)?;
    Ok((bytes, Outcome::Compiled))
}

/// Compiles `module` in a sandbox process; its error says why the sandbox gave up.
fn sandboxed(module: &[u8], bounds: &CompileOptions, caller: Option<BorrowedFd>) -> Result<Vec<u8>> {
    let input = memfd("module")?;
    let mut writer = File::from(input.try_clone()?);
    writer.write_all(module).and_then(|_| writer.rewind()).context("writing the module for the sandbox")?;
    let output = memfd("compiled")?;
    let cgroup = format!("{CGROUP_PARENT}/{}-{}", std::process::id(), unique());
    let resources = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(bounds.memory_bytes as i64).swap(bounds.memory_bytes as i64).build()?)
        .cpu(LinuxCpuBuilder::default().shares(CPU_SHARES).build()?)
        .build()?;
    sweep_cgroups();
    cgroup::create(&cgroup, Some(&resources))?;
    let limit = max_output(module);
    // SAFETY: the child only makes system calls and runs the compiler before it exits; the
    // caller has not started threads that could hold a lock the child needs.
    let outcome = match unsafe { fork() }.context("forking the compile sandbox")? {
        ForkResult::Child => child(&cgroup, input, output, limit, bounds.timeout),
        ForkResult::Parent { child } => wait(child, bounds.timeout, caller),
    };
    let _ = remove_cgroup(&cgroup);
    let mut out = File::from(output);
    out.rewind()?;
    let mut bytes = Vec::new();
    out.take(limit + 1).read_to_end(&mut bytes).context("reading the compiled module")?;
    match outcome? {
        0 if bytes.len() as u64 <= limit => Ok(bytes),
        0 => bail!("the compile sandbox wrote more than {limit} bytes"),
        code => bail!("the compile sandbox failed (exit {code}): {}", String::from_utf8_lossy(&bytes).trim()),
    }
}

/// Waits for the sandbox, killing it when `limit` has passed or the caller has hung up (its
/// container was killed: nobody waits for the result). Its exit code, or 128 + signal.
fn wait(child: Pid, limit: Duration, caller: Option<BorrowedFd>) -> Result<i32> {
    use nix::poll::{PollFd, PollFlags};
    let deadline = Instant::now() + limit;
    let pidfd = pidfd_open(child)?;
    let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    fds.extend(caller.map(|fd| PollFd::new(fd, PollFlags::from_bits_retain(libc::POLLRDHUP))));
    let stop = |why: String| -> Result<i32> {
        let _ = kill(child, Signal::SIGKILL);
        waitpid(child, None).context("reaping the compile sandbox")?;
        bail!(why)
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) if left.is_zero() => return stop(format!("the compile sandbox took longer than {limit:?} and was killed")),
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) if fds[0].any().unwrap_or(false) => break,
            Ok(_) => return stop("the container went away during its compile, which was stopped".into()),
            Err(e) => return Err(e).context("waiting for the compile sandbox"),
        }
    }
    match waitpid(child, None).context("reaping the compile sandbox")? {
        WaitStatus::Exited(_, code) => Ok(code),
        WaitStatus::Signaled(_, signal, _) => bail!("the compile sandbox was killed by {signal} (over its memory or CPU bound?)"),
        other => bail!("the compile sandbox ended oddly: {other:?}"),
    }
}

/// The sandbox: never returns. Exit 0 with the compiled module on `output`, or 1 with the reason.
fn child(cgroup: &str, input: OwnedFd, output: OwnedFd, limit: u64, timeout: Duration) -> ! {
    // The input before the output, which may take the input's fd number. Whatever fails after
    // them is reported on the output, never on the caller's stdout.
    if dup_to(input.as_raw_fd(), 0).and_then(|()| dup_to(output.as_raw_fd(), OUTPUT_FD)).is_err() {
        unsafe { libc::_exit(1) }
    }
    let code = match confine(cgroup, limit, timeout).and_then(|()| compile()) {
        Ok(()) => 0,
        Err(e) => {
            let mut out = unsafe { File::from_raw_fd(OUTPUT_FD) };
            let _ = out.set_len(0).and_then(|_| out.rewind()).and_then(|_| write!(out, "{e:#}"));
            std::mem::forget(out);
            1
        }
    };
    unsafe { libc::_exit(code) }
}

/// Everything of the sandbox before the module is read. fds 1 and 2 become /dev/null (WasmEdge
/// logs on stdout), and no fd stays open but them, the module (0) and the output (3).
fn confine(cgroup: &str, limit: u64, timeout: Duration) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("tying the sandbox to its caller")?;
    cgroup::join(cgroup)?;
    let null = File::options().write(true).open("/dev/null").context("opening /dev/null")?;
    dup_to(null.as_raw_fd(), 1)?;
    dup_to(null.as_raw_fd(), 2)?;
    close_fds_from(OUTPUT_FD + 1);
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .context("unsharing namespaces")?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).context("making / private")?;
    // An empty tmpfs is the whole filesystem: WasmEdge writes its output file there. A chroot
    // also keeps the sandbox from making a user namespace.
    let scratch = "/tmp";
    let size = format!("size={},mode=0700,uid={NOBODY},gid={NOBODY}", limit + (1 << 20));
    mount(Some("tmpfs"), scratch, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, Some(size.as_str()))
        .context("mounting the sandbox's tmpfs")?;
    nix::unistd::chroot(scratch).context("chroot")?;
    std::env::set_current_dir("/").context("chdir /")?;
    // CPU time on all threads: the wall-clock bound on each CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    set_rlimit(libc::RLIMIT_CPU, timeout.as_secs().max(1) * cpus)?;
    set_rlimit(libc::RLIMIT_FSIZE, limit)?;
    set_rlimit(libc::RLIMIT_NOFILE, 64)?;
    set_rlimit(libc::RLIMIT_CORE, 0)?;
    let nobody = Gid::from_raw(NOBODY);
    nix::unistd::setgroups(&[]).context("dropping groups")?;
    nix::unistd::setresgid(nobody, nobody, nobody).context("setting the gid")?;
    let nobody = Uid::from_raw(NOBODY);
    nix::unistd::setresuid(nobody, nobody, nobody).context("setting the uid")?;
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    super::security::deny_escapes().context("installing the seccomp filter")
}

/// Reads the module from fd 0 and writes the compiled module to [`OUTPUT_FD`].
fn compile() -> Result<()> {
    let mut module = Vec::new();
    unsafe { File::from_raw_fd(0) }.read_to_end(&mut module).context("reading the module")?;
    let compiled = aot::compile(&module, std::path::Path::new("/"))?;
    let mut out = unsafe { File::from_raw_fd(OUTPUT_FD) };
    out.write_all(&compiled).context("writing the compiled module")
}

fn memfd(name: &str) -> Result<OwnedFd> {
    memfd_create(name, MFdFlags::MFD_CLOEXEC).with_context(|| format!("creating memfd {name}"))
}

fn dup_to(fd: i32, to: i32) -> Result<()> {
    if unsafe { libc::dup2(fd, to) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("dup2 to fd {to}"));
    }
    Ok(())
}

fn close_fds_from(first: i32) {
    unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<()> {
    let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setting rlimit {resource}"));
    }
    Ok(())
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A cgroup's directory may stay busy for a moment after its last process was reaped.
fn remove_cgroup(path: &str) -> Result<()> {
    for _ in 0..50 {
        if cgroup::remove(path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cgroup::remove(path)
}

/// Removes the cgroups of sandboxes whose `compile` process was killed before it could:
/// a cgroup that still holds a process (a compile under way) refuses removal and stays.
fn sweep_cgroups() {
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|e| e.path());
    let parents = hierarchies.chain([PathBuf::from("/sys/fs/cgroup")]).map(|h| h.join(CGROUP_PARENT.trim_start_matches('/')));
    let mut stale: Vec<String> = parents
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    stale.sort();
    stale.dedup();
    for name in stale {
        let _ = cgroup::remove(&format!("{CGROUP_PARENT}/{name}"));
    }
}

/// A name no other compile of this process has: pids repeat across PID namespaces.
fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{nanos:x}")
}

/// `precompile`'s main: compiles each module into the cache (the shim's default one, or
/// `--aot-dir`) through the sandbox, one line per module; exits 1 if any fails.
pub fn precompile_main(args: &[String]) -> ! {
    let (dir, modules) = match args {
        [flag, dir, rest @ ..] if flag == "--aot-dir" => (PathBuf::from(dir), rest),
        rest => (PathBuf::from(crate::engine::DEFAULT_AOT_DIR), rest),
    };
    if modules.is_empty() {
        eprintln!("usage: {PRECOMPILE_ARG} [--aot-dir DIR] MODULE...");
        std::process::exit(2);
    }
    let cache = AotCache { dir, max_bytes: crate::engine::DEFAULT_AOT_MAX_BYTES };
    let mut failed = false;
    for module in modules {
        let start = Instant::now();
        let bounds = CompileOptions::default();
        match std::fs::read(module).with_context(|| format!("reading {module}")).and_then(|bytes| compiled(&cache, &bytes, &bounds, None)) {
            Ok((_, outcome)) => println!("{module}: {outcome:?} in {:.0?}", start.elapsed()),
            Err(e) => {
                eprintln!("{module}: {e:#}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed))
}

