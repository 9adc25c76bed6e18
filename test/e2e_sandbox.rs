//! End-to-end tests of the execute service, `wasmedge-sandbox serve`: a private containerd (with
//! this shim and runc), the real build helper and compilers in the build sandbox, and HTTP from
//! a plain TCP client. Every response is validated against the service's OpenAPI document.
//! `SANDBOX_SOAK` sets the executions of the leak test (default [`SOAK_DEFAULT`]).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const SANDBOX: &str = env!("CARGO_BIN_EXE_wasmedge-sandbox");
const OPENAPI: &str = include_str!("../src/sandbox/openapi.json");
/// Bound of one HTTP exchange: a language's first execution compiles, then AOT-compiles its
/// module (or runtime) on a busy machine.
const HTTP_TIMEOUT: Duration = Duration::from_secs(600);
const NAMESPACE_OF_SERVICE: &str = "wasmedge-sandbox";
/// Executions of the soak (`SANDBOX_SOAK` overrides it).
const SOAK_DEFAULT: usize = 2000;

// ---------------------------------------------------------------------------------------------
// The service under test

struct Service {
    child: Child,
    addr: String,
    state: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    containerd: Containerd,
}

impl Service {
    fn start(extra: &[&str]) -> Service {
        Service::start_with(extra, &[])
    }

    /// With `env` in the environment of the service and of containerd (so of the shims).
    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Service {
        let containerd = Containerd::start_with(config_toml, env);
        let state = tempfile::Builder::new().prefix("sbx-state-").tempdir_in("/tmp").unwrap();
        let shim_dir = Path::new(SHIM).parent().unwrap();
        let path = format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut child = Command::new(SANDBOX)
            .args(["serve", "--listen", "127.0.0.1:0", "--address"])
            .arg(containerd.sock())
            .arg("--state-dir")
            .arg(state.path())
            .args(["--image-tool", IMAGE_TOOL])
            .args(extra)
            .env("PATH", path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        {
            let log = log.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening on ").nth(1) {
                        let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_string());
                    }
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let addr = rx.recv_timeout(Duration::from_secs(60));
        let addr = addr.unwrap_or_else(|_| panic!("the service did not start:\n{}", log.lock().unwrap()));
        Service { child, addr, state, log, containerd }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        http(&self.addr, method, path, headers, body)
    }

    fn execute(&self, body: Value) -> Value {
        let reply = self.request("POST", "/v1/execute", &[], body.to_string().as_bytes());
        assert_eq!(reply.status, 200, "{body}\n{reply:?}\nservice log:\n{}", self.log());
        let value = reply.json();
        validate("ExecuteResponse", &value);
        value
    }

    fn ctr(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.containerd.sock()).args(["-n", NAMESPACE_OF_SERVICE]).args(args);
        exec_bounded(&mut cmd, None, CTR_TIMEOUT).stdout
    }

    /// The service's snapshots, name to parent (empty: none).
    fn snapshots(&self) -> BTreeMap<String, String> {
        let listed = self.ctr(&["snapshot", "ls"]);
        listed
            .lines()
            .skip(1)
            .map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let parent = if fields.len() == 3 { fields[1] } else { "" };
                (fields[0].to_string(), parent.to_string())
            })
            .collect()
    }

    /// The committed layer snapshots of programs.
    fn layers(&self) -> BTreeSet<String> {
        self.snapshots().into_keys().filter(|n| n.starts_with("wsbx/layer/")).collect()
    }

    /// The layer chains under the running executions' snapshots, by snapshot.
    fn running_chains(&self) -> BTreeMap<String, BTreeSet<String>> {
        let all = self.snapshots();
        let chain = |run: &str| {
            let mut chain = BTreeSet::new();
            let mut name = all[run].as_str();
            while !name.is_empty() {
                chain.insert(name.to_string());
                name = all.get(name).map_or("", String::as_str);
            }
            chain
        };
        all.keys().filter(|n| n.starts_with("wsbx/run/")).map(|run| (run.clone(), chain(run))).collect()
    }

    /// Stops the service (SIGTERM) and waits for it to exit.
    fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if wait_timeout(&mut self.child, Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Waits until an execution has written `/work/started` (a marker the test's code writes
    /// first): it runs.
    fn wait_for_started(&self) {
        let scratch = self.state.path().join("scratch");
        wait_until("the execution to start", Duration::from_secs(300), || {
            fs::read_dir(&scratch).unwrap().flatten().any(|e| e.path().join("work/started").exists())
        });
    }

    /// The service stopped, nothing of any execution (nor of its warm slots) is left:
    /// containers, tasks, snapshots other than the committed program layers, shims, mounts,
    /// cgroups, FIFOs and scratch directories.
    fn assert_nothing_left(&mut self) {
        self.stop();
        let ctr = |args: &[&str]| self.ctr(args);
        wait_until("containers and tasks to go", Duration::from_secs(30), || {
            ctr(&["container", "ls", "-q"]).trim().is_empty() && ctr(&["task", "ls", "-q"]).trim().is_empty()
        });
        let snapshots = ctr(&["snapshot", "ls"]);
        let active: Vec<&str> = snapshots.lines().skip(1).filter(|l| !l.starts_with("wsbx/layer/")).collect();
        assert!(active.is_empty(), "snapshots left: {active:?}");
        // The shims are started with containerd's socket; the service itself names it too.
        let sock = self.containerd.sock().to_string_lossy().into_owned();
        let service = self.child.id() as i32;
        wait_until("the shims to exit", Duration::from_secs(30), || {
            processes().iter().all(|(pid, argv)| *pid == service || !argv.iter().any(|a| *a == sock || a.contains("wsbx-")))
        });
        let dirs = [format!("{}/", self.containerd.dir.path().display()), format!("{}/", self.state.path().display())];
        wait_until("the mounts to go", Duration::from_secs(15), || {
            mount_points().iter().all(|m| !dirs.iter().any(|d| m.starts_with(d)) && !m.contains("wsbx-"))
        });
        for dir in ["runs", "scratch", "builds"] {
            let left: Vec<_> = fs::read_dir(self.state.path().join(dir)).unwrap().flatten().map(|e| e.path()).collect();
            assert!(left.is_empty(), "{dir} left: {left:?}");
        }
        let cgroups = sandbox_cgroups();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- service log ---\n{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
    }
}

/// The execution cgroups under /wasmedge-sandbox in any hierarchy.
fn sandbox_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/wasmedge-sandbox")];
    for entry in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        roots.push(entry.path().join("wasmedge-sandbox"));
    }
    for root in roots {
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            if entry.path().is_dir() && entry.file_name().to_string_lossy().starts_with("wsbx-") {
                found.push(entry.path());
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// HTTP, by hand: one request per connection

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// An error reply: its code, after checking its shape.
    fn error_code(&self) -> String {
        let value = self.json();
        validate("Error", &value);
        value["error"]["code"].as_str().unwrap().to_string()
    }
}

fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A refused body may be answered before it is all read: a broken pipe is not a failure.
    let _ = stream.write_all(body);
    stream
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = send(addr, method, path, headers, body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP reply: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: body.to_string() }
}

/// Validates `value` against `#/components/schemas/NAME` of the OpenAPI document.
fn validate(name: &str, value: &Value) {
    let mut schema: Value = serde_json::from_str(OPENAPI).unwrap();
    schema["$ref"] = json!(format!("#/components/schemas/{name}"));
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{name} does not match the OpenAPI document: {errors:?}\n{value:#}");
}

// ---------------------------------------------------------------------------------------------
// Programs: each prints its arguments, its stdin and $WHO, and exits with $CODE

fn program(language: &str) -> Option<&'static str> {
    Some(match language {
        "python" => "import sys, os\nprint('hello ' + ' '.join(sys.argv[1:]))\nprint('stdin:' + sys.stdin.read())\nprint('env:' + os.environ.get('WHO', ''))\nsys.exit(int(os.environ.get('CODE', '0')))\n",
        "javascript" => "const fs = require('fs');\nconsole.log('hello ' + process.argv.slice(2).join(' '));\nconsole.log('stdin:' + fs.readFileSync(0));\nconsole.log('env:' + (process.env.WHO || ''));\nprocess.exit(Number(process.env.CODE || 0));\n",
        "typescript" => "import { readFileSync } from 'fs';\nconst args: string[] = process.argv.slice(2);\nconsole.log('hello ' + args.join(' '));\nconsole.log('stdin:' + readFileSync(0));\nconsole.log('env:' + (process.env.WHO || ''));\nprocess.exit(Number(process.env.CODE || 0));\n",
        "c" => "#include <stdio.h>\n#include <stdlib.h>\nint main(int argc, char **argv) {\n  printf(\"hello\");\n  for (int i = 1; i < argc; i++) printf(\" %s\", argv[i]);\n  char buf[256]; size_t n = fread(buf, 1, sizeof buf - 1, stdin); buf[n] = 0;\n  printf(\"\\nstdin:%s\\n\", buf);\n  const char *who = getenv(\"WHO\"); printf(\"env:%s\\n\", who ? who : \"\");\n  const char *code = getenv(\"CODE\"); return code ? atoi(code) : 0;\n}\n",
        "c++" => "#include <iostream>\n#include <iterator>\n#include <string>\n#include <cstdlib>\nint main(int argc, char **argv) {\n  std::cout << \"hello\";\n  for (int i = 1; i < argc; i++) std::cout << ' ' << argv[i];\n  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());\n  std::cout << \"\\nstdin:\" << in << \"\\n\";\n  const char *who = std::getenv(\"WHO\"); std::cout << \"env:\" << (who ? who : \"\") << \"\\n\";\n  const char *code = std::getenv(\"CODE\"); return code ? std::atoi(code) : 0;\n}\n",
        "rust" => "use std::io::Read;\nfn main() {\n    let args: Vec<String> = std::env::args().skip(1).collect();\n    println!(\"hello {}\", args.join(\" \"));\n    let mut input = String::new();\n    std::io::stdin().read_to_string(&mut input).unwrap();\n    println!(\"stdin:{input}\");\n    println!(\"env:{}\", std::env::var(\"WHO\").unwrap_or_default());\n    std::process::exit(std::env::var(\"CODE\").ok().and_then(|c| c.parse().ok()).unwrap_or(0));\n}\n",
        "go" => "package main\n\nimport (\n\t\"fmt\"\n\t\"io\"\n\t\"os\"\n\t\"strconv\"\n\t\"strings\"\n)\n\nfunc main() {\n\tfmt.Println(\"hello \" + strings.Join(os.Args[1:], \" \"))\n\tb, _ := io.ReadAll(os.Stdin)\n\tfmt.Println(\"stdin:\" + string(b))\n\tfmt.Println(\"env:\" + os.Getenv(\"WHO\"))\n\tc, _ := strconv.Atoi(os.Getenv(\"CODE\"))\n\tos.Exit(c)\n}\n",
        _ => return None,
    })
}

/// The languages the suite runs: all the service knows, or `SANDBOX_LANGUAGES` (comma-separated).
fn languages_under_test(service: &Service) -> Vec<String> {
    let listed = service.request("GET", "/v1/languages", &[], b"").json();
    validate("Languages", &listed);
    let known: Vec<String> =
        listed["languages"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_string()).collect();
    match std::env::var("SANDBOX_LANGUAGES") {
        Ok(list) => list.split(',').map(String::from).filter(|l| known.contains(l)).collect(),
        Err(_) => known,
    }
}

fn python(code: &str) -> Value {
    json!({"language": "python", "code": code})
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn every_language_gets_args_stdin_env_and_its_exit_code() {
    let mut service = Service::start(&[]);
    let health = service.request("GET", "/healthz", &[], b"").json();
    validate("Health", &health);
    let ready = service.request("GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{ready:?}");
    validate("Ready", &ready.json());
    for language in languages_under_test(&service) {
        let code = program(&language).unwrap_or_else(|| panic!("no test program for {language}"));
        let first = service.execute(json!({
            "language": language, "code": code, "args": ["a", "b c"], "stdin": "abc",
            "env": {"WHO": "sandbox", "CODE": "3"},
        }));
        assert_eq!(first["phase"], "run", "{language}: {first:#}");
        assert_eq!(first["stdout"], "hello a b c\nstdin:abc\nenv:sandbox\n", "{language}: {first:#}");
        assert_eq!(first["exit_code"], 3, "{language}: {first:#}");
        assert_eq!(first["timed_out"], false);
        assert!(first["memory_peak_bytes"].as_u64().unwrap() > 0, "{language}: {first:#}");
        let second = service.execute(json!({"language": language, "code": code, "args": ["x"], "env": {"CODE": "0"}}));
        assert_eq!(second["cache"], "hit", "{language}: the same code again");
        assert_eq!(second["stdout"], "hello x\nstdin:\nenv:\n", "{language}: {second:#}");
        assert_eq!(second["exit_code"], 0);
        assert_eq!(second["duration_ms"]["compile"], 0);
    }
    let metrics = service.request("GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    for name in ["wasmedge_sandbox_executions_total", "wasmedge_sandbox_cache_hits_total", "wasmedge_sandbox_run_seconds_bucket", "wasmedge_sandbox_containers_in_flight"] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics:\n{}", metrics.body);
    }
    assert!(metrics.body.contains("outcome=\"exit_nonzero\""), "{}", metrics.body);
    service.assert_nothing_left();
}

#[test]
fn a_compile_error_comes_back_verbatim() {
    let mut service = Service::start(&[]);
    let languages = languages_under_test(&service);
    if languages.iter().any(|l| l == "c") {
        let reply = service.execute(json!({"language": "c", "code": "int main(void) { return answer; }\n"}));
        assert_eq!(reply["phase"], "compile", "{reply:#}");
        assert_ne!(reply["exit_code"], 0);
        let stderr = reply["stderr"].as_str().unwrap();
        assert!(stderr.contains("main.c:1:25: error: use of undeclared identifier 'answer'"), "{stderr}");
        assert!(stderr.contains("    1 | int main(void) { return answer; }\n"), "clang's own lines: {stderr}");
    }
    // The sandbox's files, not the host's: a program that includes /etc/shadow sees no such file.
    if languages.iter().any(|l| l == "c") && Path::new("/etc/shadow").exists() {
        let reply = service.execute(json!({"language": "c", "code": "#include \"/etc/shadow\"\nint main(void) { return 0; }\n"}));
        assert_eq!(reply["phase"], "compile", "{reply:#}");
        assert!(reply["stderr"].as_str().unwrap().contains("'/etc/shadow' file not found"), "{reply:#}");
    }
    if languages.iter().any(|l| l == "rust") && Path::new("/etc/shadow").exists() {
        let code = "fn main() { print!(\"{}\", include_str!(\"/etc/shadow\")); }\n";
        let reply = service.execute(json!({"language": "rust", "code": code}));
        assert_eq!(reply["phase"], "compile", "{reply:#}");
        assert!(reply["stderr"].as_str().unwrap().contains("No such file or directory"), "{reply:#}");
    }
    let reply = service.execute(json!({"language": "javascript", "code": "function (\n"}));
    assert_eq!(reply["phase"], "compile", "{reply:#}");
    let stderr = reply["stderr"].as_str().unwrap();
    assert!(stderr.contains("[ERROR] Expected identifier but found \"(\"\n\n    main.js:1:9:\n"), "esbuild's own words: {reply:#}");
    service.assert_nothing_left();
}

#[test]
fn limits_and_isolation_hold() {
    let mut service = Service::start(&[]);
    // An endless loop under a 1 s limit.
    let reply = service.execute(json!({"language": "python", "code": "while True:\n    pass\n", "limits": {"timeout_ms": 1000}}));
    assert_eq!(reply["timed_out"], true, "{reply:#}");
    assert_eq!(reply["exit_code"], 124, "{reply:#}");
    // A memory bomb under 64 MiB: the kernel's OOM killer or the engine's cap stops it.
    let bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 20))\n";
    let reply = service.execute(json!({"language": "python", "code": bomb, "limits": {"memory_mb": 64}}));
    assert_ne!(reply["exit_code"], 0, "{reply:#}");
    let stderr = reply["stderr"].as_str().unwrap();
    assert!(reply["out_of_memory"] == true || stderr.contains("MemoryError"), "{reply:#}");
    assert!(reply["memory_peak_bytes"].as_u64().unwrap() <= 64 << 20, "{reply:#}");
    // The engine's cap refuses the growth (malloc returns NULL, pages untouched, so the cgroup
    // is not what stops it) and the module exits by itself: still out of memory.
    if languages_under_test(&service).iter().any(|l| l == "c") {
        // Through a volatile pointer, so that clang cannot drop the unused allocations.
        let grow = "#include <stdio.h>\n#include <stdlib.h>\nvoid *(*volatile allocate)(size_t) = malloc;\nint main(void) {\n  size_t mib = 0;\n  while (allocate(1 << 20)) mib++;\n  printf(\"refused after %zu MiB\\n\", mib);\n  return 1;\n}\n";
        let reply = service.execute(json!({"language": "c", "code": grow, "limits": {"memory_mb": 64}}));
        assert_eq!(reply["exit_code"], 1, "{reply:#}");
        assert!(reply["stdout"].as_str().unwrap().starts_with("refused after "), "{reply:#}");
        assert_eq!(reply["out_of_memory"], true, "{reply:#}");
    }
    // Files: given ones are there; what one execution writes, the next does not see.
    let write = "import os\nprint(open('/work/in.txt').read())\nopen('/work/secret.txt', 'w').write('x')\nprint(sorted(os.listdir('/work')))\n";
    let reply = service.execute(json!({"language": "python", "code": write, "files": [{"path": "in.txt", "content": "given"}]}));
    assert_eq!(reply["stdout"], "given\n['in.txt', 'secret.txt']\n", "{reply:#}");
    let reply = service.execute(python("import os\nprint(os.listdir('/work'))\n"));
    assert_eq!(reply["stdout"], "[]\n", "{reply:#}");
    // No network: a connect fails (WASI preview 1 has no sockets, and the container's network
    // namespace has no interface).
    let connect = "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 80), timeout=2)\n    print('connected')\nexcept Exception as e:\n    print('refused', type(e).__name__)\n";
    let reply = service.execute(python(connect));
    assert!(reply["stdout"].as_str().unwrap().starts_with("refused"), "{reply:#}");
    // Output past the bound of 20 MiB is cut and marked.
    let flood = "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(25):\n    sys.stdout.write(block)\n";
    let reply = service.execute(python(flood));
    assert_eq!(reply["truncated"], true);
    assert_eq!(reply["stdout"].as_str().unwrap().len(), 20 << 20);
    service.assert_nothing_left();
}

#[test]
fn bad_requests_get_their_status_codes() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    fs::write(keys.path(), "# keys\nk1\nk2\n").unwrap();
    let mut service = Service::start(&[
        "--api-keys", keys.path().to_str().unwrap(), "--rate", "0.001", "--burst", "3",
        "--concurrency", "1", "--queue", "0", "--max-memory-limit", "268435456",
    ]);
    let post = |key: &str, body: &[u8]| {
        let auth = format!("Bearer {key}");
        service.request("POST", "/v1/execute", &[("Authorization", &auth)], body)
    };
    let no_key = service.request("POST", "/v1/execute", &[], python("print(1)").to_string().as_bytes());
    assert_eq!((no_key.status, no_key.error_code().as_str()), (401, "unauthorized"));
    let wrong = post("nope", b"{}");
    assert_eq!((wrong.status, wrong.error_code().as_str()), (401, "unauthorized"));

    let malformed = post("k1", b"{\"language\": ");
    assert_eq!((malformed.status, malformed.error_code().as_str()), (400, "bad_request"), "{malformed:?}");
    let cobol = post("k1", json!({"language": "cobol", "code": "x"}).to_string().as_bytes());
    assert_eq!(cobol.status, 400);
    assert!(cobol.json()["error"]["message"].as_str().unwrap().contains("known languages: "), "{cobol:?}");
    let limit = post("k1", json!({"language": "python", "code": "", "limits": {"memory_mb": 512}}).to_string().as_bytes());
    assert_eq!((limit.status, limit.error_code().as_str()), (400, "bad_limit"), "{limit:?}");
    // The burst of k1 is spent: 429 with Retry-After; k2 has its own bucket.
    let limited = post("k1", b"{}");
    assert_eq!((limited.status, limited.error_code().as_str()), (429, "rate_limited"), "{limited:?}");
    assert!(limited.header("Retry-After").unwrap().parse::<u64>().unwrap() >= 1);

    let big = json!({"language": "python", "code": "#".repeat((1 << 20) + 1)});
    let too_large = post("k2", big.to_string().as_bytes());
    assert_eq!((too_large.status, too_large.error_code().as_str()), (413, "too_large"), "{too_large:?}");

    // One slot, no queue: while one execution runs, the next is turned away with 503.
    let slow = json!({"language": "python", "code": "import time\nopen('/work/started', 'w').close()\ntime.sleep(30)\n", "limits": {"timeout_ms": 60000}});
    let first = send(&service.addr, "POST", "/v1/execute", &[("Authorization", "Bearer k2")], slow.to_string().as_bytes());
    service.wait_for_started();
    let busy = post("k2", python("print(1)").to_string().as_bytes());
    assert_eq!((busy.status, busy.error_code().as_str()), (503, "queue_full"), "{busy:?}");
    assert!(busy.header("Retry-After").is_some());
    first.shutdown(std::net::Shutdown::Both).unwrap();
    drop(first);
    service.assert_nothing_left();
}

#[test]
fn a_client_that_goes_away_leaves_nothing_behind() {
    let mut service = Service::start(&[]);
    // Compiled (and cached) first, so that the container below is the execution's.
    let code = "import time\nopen('/work/started', 'w').close()\ntime.sleep(60)\n";
    let warm = service.execute(json!({"language": "python", "code": code, "limits": {"timeout_ms": 500}}));
    assert_eq!(warm["timed_out"], true, "{warm:#}");
    // Its scratch directory (with its marker) goes after the reply.
    let scratch = service.state.path().join("scratch");
    wait_until("the first execution's scratch directory to go", Duration::from_secs(30), || {
        fs::read_dir(&scratch).unwrap().flatten().all(|e| !e.path().join("work/started").exists())
    });
    let slow = json!({"language": "python", "code": code});
    let stream = send(&service.addr, "POST", "/v1/execute", &[], slow.to_string().as_bytes());
    service.wait_for_started();
    drop(stream);
    service.assert_nothing_left();
    assert!(service.log().contains("outcome=cancelled"), "{}", service.log());
}

/// Executions `from..to` of the soak by 8 concurrent clients: a cached C program doubling its
/// argument.
fn soak_batch(addr: &str, from: usize, to: usize) {
    let code = "#include <stdio.h>\n#include <stdlib.h>\nint main(int argc, char **argv) { printf(\"%d\\n\", atoi(argv[1]) * 2); return 0; }\n";
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, next) = (addr.to_string(), next.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= to {
                    break;
                }
                let body = json!({"language": "c", "code": code, "args": [i.to_string()]});
                let reply = http(&addr, "POST", "/v1/execute", &[], body.to_string().as_bytes());
                assert_eq!(reply.status, 200, "{reply:?}");
                assert_eq!(reply.json()["stdout"], format!("{}\n", i * 2));
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

/// The resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim();
    kib.parse::<u64>().unwrap() << 10
}

#[test]
fn many_concurrent_executions_leave_nothing_behind() {
    let n: usize = std::env::var("SANDBOX_SOAK").ok().and_then(|v| v.parse().ok()).unwrap_or(SOAK_DEFAULT);
    let mut service = Service::start(&["--rate", "100000", "--burst", "100000"]);
    // A warm-up batch first: the compile, the allocator's arenas and the connection pools reach
    // their working size; what the service holds after it is the baseline.
    let warm_up = (n / 10).max(16).min(n);
    soak_batch(&service.addr, 0, warm_up);
    let baseline = rss(service.child.id());
    soak_batch(&service.addr, warm_up, n);
    let end = rss(service.child.id());
    eprintln!("soak of {n}: service RSS {} KiB after {warm_up} executions, {} KiB at the end", baseline >> 10, end >> 10);
    // Flat, within a generous margin for the allocator's own growth: half the baseline plus
    // 16 MiB. A leak of a few KiB an execution stays under it; one of 20 KiB over 2000 does not.
    assert!(end <= baseline + baseline / 2 + (16 << 20), "the service's RSS grew from {baseline} to {end} bytes over {n} executions");
    service.assert_nothing_left();
}

#[test]
fn programs_that_leave_the_cache_take_their_snapshots_along() {
    // Without warm slots, which hold a runtime's layers for as long as they wait.
    let mut service = Service::start(&["--cache-ttl", "2", "--pool", "0"]);
    // Python's runtime AOT-compiled first (once per machine), so that A and B below go away
    // while they run, not while the shim compiles.
    let warm = service.execute(python("print('warm')"));
    assert_eq!(warm["stdout"], "warm\n", "{warm:#}");
    let sleeper = |code: &str| json!({"language": "python", "code": code, "limits": {"timeout_ms": 120000}});
    // B runs on while A, which shares B's runtime layers, leaves.
    let b = send(&service.addr, "POST", "/v1/execute", &[], sleeper("import time\ntime.sleep(600)\n").to_string().as_bytes());
    wait_until("B's execution", HTTP_TIMEOUT, || service.running_chains().len() == 1);
    let b_chain = service.running_chains().into_values().next().unwrap();
    let a = send(&service.addr, "POST", "/v1/execute", &[], sleeper("import time\ntime.sleep(601)\n").to_string().as_bytes());
    wait_until("A's execution", HTTP_TIMEOUT, || service.running_chains().len() == 2);
    let a_chain = service.running_chains().into_values().find(|c| *c != b_chain).unwrap();
    assert!(a_chain.intersection(&b_chain).count() > 0, "A and B share the runtime's layers: {a_chain:?} {b_chain:?}");
    let both: BTreeSet<String> = a_chain.union(&b_chain).cloned().collect();
    wait_until("the warm-up's own layers to go", Duration::from_secs(60), || service.layers() == both);
    drop(a);
    wait_until("A's own layers to go, B's to stay", Duration::from_secs(60), || service.layers() == b_chain);
    drop(b);
    wait_until("B's layers to go", Duration::from_secs(60), || service.layers().is_empty());
    // Gone from the cache: compiled again.
    let again = service.execute(python("print('again')"));
    assert_eq!((again["cache"].as_str(), again["stdout"].as_str()), (Some("miss"), Some("again\n")), "{again:#}");
    wait_until("its layers to go", Duration::from_secs(60), || service.layers().is_empty());
    service.assert_nothing_left();
    drop(service);

    // With the cache off, a program's layers go with its execution.
    let mut service = Service::start(&["--cache", "false", "--pool", "0"]);
    let reply = service.execute(python("print('once')"));
    assert_eq!(reply["stdout"], "once\n", "{reply:#}");
    wait_until("the layers to go", Duration::from_secs(60), || service.layers().is_empty());
    service.assert_nothing_left();
}

/// One request, one trace: the HTTP span at the root, `compile` and `run` under it, and the
/// shim's `container` span (with its own spans) under `run`.
#[cfg(feature = "otlp")]
#[test]
fn a_request_is_one_trace_from_its_http_span_down_to_the_shims_spans() {
    use common::otlp::{collector, string_attr};
    let (endpoint, requests) = collector();
    // Without warm slots: a warm slot's shim spans are the slot's, made before the request.
    let mut service = Service::start_with(&["--pool", "0"], &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let reply = service.execute(python("print('traced')"));
    assert_eq!(reply["stdout"], "traced\n", "{reply:#}");
    // (service.name, span) of every span exported, until the request's and the shim's are in.
    let mut spans = Vec::new();
    let has = |spans: &Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>, name: &str| spans.iter().any(|(_, s)| s.name == name);
    while !(has(&spans, "POST /v1/execute") && has(&spans, "container")) {
        let (_, request) = requests.recv_timeout(Duration::from_secs(60)).expect("the spans did not all reach the collector in 60 s");
        for resource in request.resource_spans {
            let name = resource.resource.as_ref().and_then(|r| string_attr(&r.attributes, "service.name")).unwrap_or_default();
            spans.extend(resource.scope_spans.into_iter().flat_map(|s| s.spans).map(|s| (name.clone(), s)));
        }
    }
    let find = |service: &str, name: &str| {
        spans.iter().find(|(n, s)| n == service && s.name == name).map(|(_, s)| s.clone()).unwrap_or_else(|| panic!("no {name} span of {service}"))
    };
    let root = find("wasmedge-sandbox", "POST /v1/execute");
    assert!(root.parent_span_id.is_empty(), "the request's span is the root");
    assert_eq!(string_attr(&root.attributes, "http.response.status_code").as_deref(), Some("200"));
    let run = find("wasmedge-sandbox", "run");
    for child in [find("wasmedge-sandbox", "compile"), run.clone()] {
        assert_eq!((&child.trace_id, &child.parent_span_id), (&root.trace_id, &root.span_id), "{} under the request", child.name);
    }
    let container = find("containerd-shim-wasmedge", "container");
    assert_eq!((&container.trace_id, &container.parent_span_id), (&root.trace_id, &run.span_id), "the shim's span under run");
    let shims: Vec<_> = spans.iter().filter(|(n, s)| n == "containerd-shim-wasmedge" && s.parent_span_id == container.span_id).collect();
    assert!(shims.iter().any(|(_, s)| s.name == "instantiate"), "the container's own spans: {shims:?}");
    assert!(shims.iter().all(|(_, s)| s.trace_id == root.trace_id));
    service.assert_nothing_left();
}

/// The value of `name` (a metric line's start, labels included) in the service's /metrics.
fn metric(service: &Service, name: &str) -> f64 {
    let body = service.request("GET", "/metrics", &[], b"").body;
    body.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

#[test]
fn warm_slots_serve_one_request_each_and_start_from_the_same_state() {
    let mut service = Service::start(&["--pool", "2"]);
    let mut ids = BTreeSet::new();
    for language in ["python", "javascript"] {
        let ready = format!("wasmedge_sandbox_warm_ready{{language=\"{language}\"}}");
        // What one execution leaves in its interpreter and its scratch directory, the next
        // does not see.
        let code = match language {
            "python" => "import json, os\nprint(getattr(json, 'mark', None), os.listdir('/work'))\njson.mark = 1\nopen('/work/left', 'w').close()\n",
            _ => "const fs = require('fs');\nconsole.log(String(globalThis.mark), fs.readdirSync('/work').length);\nglobalThis.mark = 1;\nfs.writeFileSync('/work/left', '');\n",
        };
        let fresh = if language == "python" { "None []\n" } else { "undefined 0\n" };
        for _ in 0..3 {
            wait_until("a warm slot", Duration::from_secs(300), || metric(&service, &ready) >= 1.0);
            let reply = service.execute(json!({"language": language, "code": code}));
            assert_eq!((reply["warm"].as_bool(), reply["stdout"].as_str()), (Some(true), Some(fresh)), "{language}: {reply:#}");
        }
        // Another memory limit than the slots': a container of its own.
        let reply = service.execute(json!({"language": language, "code": code, "limits": {"memory_mb": 120}}));
        assert_eq!((reply["warm"].as_bool(), reply["stdout"].as_str()), (Some(false), Some(fresh)), "{language}: {reply:#}");
    }
    for line in service.log().lines().filter(|l| l.contains("warm=true")) {
        let id = line.split("id=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        assert!(ids.insert(id.clone()), "warm slot {id} used twice:\n{}", service.log());
    }
    assert_eq!(ids.len(), 6, "{}", service.log());
    // The slot's time limit is the request's: the service kills it at the deadline.
    wait_until("a warm slot", Duration::from_secs(300), || metric(&service, "wasmedge_sandbox_warm_ready{language=\"python\"}") >= 1.0);
    let reply = service.execute(json!({"language": "python", "code": "while True:\n    pass\n", "limits": {"timeout_ms": 1000}}));
    assert_eq!((reply["warm"].as_bool(), reply["timed_out"].as_bool(), reply["exit_code"].as_i64()), (Some(true), Some(true), Some(124)), "{reply:#}");
    assert!(metric(&service, "wasmedge_sandbox_warm_slot_bytes{language=\"python\"}") > 0.0);
    service.assert_nothing_left();
}

#[test]
fn a_public_address_without_keys_is_refused() {
    let out = exec_bounded(Command::new(SANDBOX).args(["serve", "--listen", "0.0.0.0:0"]), None, Duration::from_secs(30));
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("without --api-keys"), "{}", out.stderr);
}

#[test]
fn the_typescript_client_works_against_the_service() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    fs::write(keys.path(), "k1\n").unwrap();
    let mut service = Service::start(&["--api-keys", keys.path().to_str().unwrap(), "--rate", "0.05", "--burst", "1"]);
    // Debian's node runs no TypeScript: esbuild makes one module of the test and the client.
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript");
    let bundle = service.state.path().join("client.test.mjs");
    let out = exec_bounded(
        Command::new("esbuild")
            .args(["test/client.test.ts", "--bundle", "--platform=node", "--format=esm", "--log-level=warning"])
            .arg(format!("--outfile={}", bundle.display()))
            .current_dir(&client),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "esbuild failed: {}", out.stderr);
    let out = exec_bounded(
        Command::new("node")
            .args(["--test", "--test-reporter=tap"])
            .arg(&bundle)
            .env("SANDBOX_URL", format!("http://{}", service.addr))
            .env("SANDBOX_KEY", "k1"),
        None,
        HTTP_TIMEOUT,
    );
    assert_eq!(out.code, 0, "node --test failed:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("# fail 0") && out.stdout.contains("# skipped 0"), "{}", out.stdout);
    service.assert_nothing_left();
}
