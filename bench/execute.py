"""The execute section of `make bench`: hello in Python, JavaScript and Rust through the execute service
(wasmedge-sandbox) at its HTTP API, with 1 and with 8 concurrent clients, with the warm pool and with it off
(`--pool 0`), side by side with the same program through `ctr run --rm` and this shim, and a native process.

The service runs on bench/run.sh's containerd, in its own namespace. Every program is compiled (and cached)
before it is timed: the figures are warm-cache figures. Knobs: BENCH_EXEC_RUNS (40, one client),
BENCH_EXEC_CONCURRENT_RUNS (160, 8 clients), BENCH_EXEC_CLIENTS (8).
"""
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SANDBOX = os.path.abspath("target/release/wasmedge-sandbox")
IMAGE_TOOL = os.path.abspath("target/release/wasmedge-image")
SHIM = "io.containerd.wasmedge.v1"
# language -> (file name, code, what it prints)
HELLO = {
    "python": ("hello.py", "print('hi')\n", "hi\n"),
    "javascript": ("hello.js", "console.log('hi')\n", "hi\n"),
    "rust": ("main.rs", "fn main() {\n    println!(\"hi\");\n}\n", "hi\n"),
}
WARM = ("python", "javascript")
# The targets: figure -> (comparison, bound).
TARGETS = {
    "python_p50_ms": ("<=", 25.0),
    "python_p50_vs_native": ("<=", 3.0),
    "javascript_p50_ms": ("<=", 10.0),
    "javascript_per_s_at_8": (">=", 200.0),
    "p99_vs_p50_at_8": ("<=", 4.0),
}


def knob(name, default):
    value = os.environ.get(name)
    return default if value in (None, "") else type(default)(value)


def pct(values, p):
    s = sorted(values)
    if not s:
        return None
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def summary(latencies):
    return {"p50_ms": ms(pct(latencies, 50)), "p90_ms": ms(pct(latencies, 90)), "p99_ms": ms(pct(latencies, 99)),
            "n": len(latencies)}


class Service:
    """wasmedge-sandbox serve on the bench's containerd; stopped with SIGTERM."""

    def __init__(self, address, work, name, extra):
        self.state = os.path.join(work, f"sandbox-{name}")
        os.makedirs(self.state, exist_ok=True)
        self.log_path = os.path.join(work, f"sandbox-{name}.log")
        self.log = open(self.log_path, "w")
        shim_dir = os.path.abspath("target/release")
        env = dict(os.environ, PATH=f"{shim_dir}:{os.environ['PATH']}", RUST_LOG="info")
        self.proc = subprocess.Popen(
            [SANDBOX, "serve", "--listen", "127.0.0.1:0", "--address", address, "--state-dir", self.state,
             "--image-tool", IMAGE_TOOL, "--rate", "1000000", "--burst", "1000000", "--key-concurrency", "64",
             "--queue", "256", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.time() + 60
        self.addr = None
        while self.addr is None:
            if time.time() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise RuntimeError(f"wasmedge-sandbox did not start: {open(self.log_path).read()[-2000:]}")
            time.sleep(0.1)
            m = re.search(r"listening on (\S+)", open(self.log_path).read())
            self.addr = m and m.group(1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def connect(self):
        host, port = self.addr.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=900)

    def metric(self, name):
        conn = self.connect()
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
        return sum(float(l.split()[-1]) for l in body.splitlines() if l.startswith(name))

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_warm(self, within=900):
        """Until every warm language has the slots it wants ready (the first start of a runtime AOT-compiles it)."""
        deadline = time.time() + within
        for language in WARM:
            label = f'{{language="{language}"}}'
            while (self.metric(f"wasmedge_sandbox_warm_ready{label}") < self.metric(f"wasmedge_sandbox_warm_target{label}")
                   or self.metric(f"wasmedge_sandbox_warm_target{label}") == 0):
                if time.time() > deadline:
                    raise RuntimeError(f"the warm {language} slots are not ready after {within} s")
                time.sleep(0.05)


def execute(conn, language):
    code, expect = HELLO[language][1], HELLO[language][2]
    body = json.dumps({"language": language, "code": code})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/execute", body, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    elapsed = time.perf_counter() - t0
    if reply.status != 200:
        raise RuntimeError(f"{language}: HTTP {reply.status}: {data[:300]!r}")
    value = json.loads(data)
    if value["stdout"] != expect or value["exit_code"] != 0:
        raise RuntimeError(f"{language}: unexpected reply {value}")
    return elapsed, value


def one_client(service, language, runs, pool):
    conn = service.connect()
    latencies, warm = [], 0
    for _ in range(runs):
        if pool:
            # Requests that come one at a time find the pool refilled.
            service.wait_warm(within=120)
        elapsed, value = execute(conn, language)
        latencies.append(elapsed)
        warm += value.get("warm", False)
    conn.close()
    return dict(summary(latencies), warm=warm)


def many_clients(service, language, clients, runs):
    per = runs // clients

    def client(_):
        conn = service.connect()
        out = [execute(conn, language) for _ in range(per)]
        conn.close()
        return out

    cpu0, t0 = service.cpu_seconds(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    seconds = time.perf_counter() - t0
    cpu = service.cpu_seconds() - cpu0
    latencies = [r[0] for r in results]
    return dict(summary(latencies), per_s=round(len(results) / seconds, 1),
                service_cpu_ms_per_exec=round(cpu * 1000 / len(results), 2),
                warm=sum(r[1].get("warm", False) for r in results))


def through_service(address, work, name, extra, runs, concurrent_runs, clients, pool):
    service = Service(address, work, name, extra)
    try:
        out = {}
        for language in HELLO:  # compiled and cached first, and each runtime AOT-compiled
            conn = service.connect()
            for _ in range(3):
                execute(conn, language)
            conn.close()
        if pool:
            service.wait_warm()
        for language in HELLO:
            row = {"1 client": one_client(service, language, runs, pool)}
            if pool:
                service.wait_warm()
            row[f"{clients} clients"] = many_clients(service, language, clients, concurrent_runs)
            out[language] = row
        if pool:
            service.wait_warm()
            out["warm_slots"] = {l: {"mib": round(service.metric(f'wasmedge_sandbox_warm_slot_bytes{{language="{l}"}}') / 2**20, 1),
                                     "slots": service.metric(f'wasmedge_sandbox_warm_target{{language="{l}"}}')}
                                 for l in WARM}
        return out
    finally:
        service.stop()


def through_ctr(address, namespace, work, runs):
    """The same programs as images (wasmedge-image build --import), each run with ctr run --rm."""
    out = {}
    src = os.path.join(work, "exec-src")
    os.makedirs(src, exist_ok=True)
    for language, (name, code, expect) in HELLO.items():
        path = os.path.join(src, name)
        with open(path, "w") as f:
            f.write(code)
        tag = f"localhost/bench-exec/{language}:hello"
        subprocess.run([IMAGE_TOOL, "build", path, "--tag", tag, "--import", "--address", address,
                        "--namespace", namespace, "--platforms", "wasi/wasm"],
                       check=True, capture_output=True, timeout=900)
        latencies = []
        for i in range(runs + 2):
            t0 = time.perf_counter()
            done = subprocess.run(["ctr", "-a", address, "-n", namespace, "run", "--rm", "--runtime", SHIM,
                                   "--platform", "wasi/wasm", tag, f"exec-{language}-{i}"],
                                  capture_output=True, text=True, timeout=900)
            elapsed = time.perf_counter() - t0
            if done.returncode != 0 or done.stdout != expect:
                raise RuntimeError(f"ctr run {language}: {done.returncode} {done.stdout!r} {done.stderr[-300:]!r}")
            if i >= 2:  # the first runs AOT-compile and warm the page cache
                latencies.append(elapsed)
        out[language] = summary(latencies)
    return out


def native(work, runs):
    """A native process of each: python3 -c, node -e, a rustc-built binary."""
    binary = os.path.join(work, "hello-native")
    src = os.path.join(work, "hello-native.rs")
    with open(src, "w") as f:
        f.write(HELLO["rust"][1])
    subprocess.run(["rustc", "-O", "-o", binary, src], check=True, capture_output=True)
    commands = {"python": ["python3", "-c", HELLO["python"][1]], "javascript": ["node", "-e", HELLO["javascript"][1]],
                "rust": [binary]}
    out = {}
    for language, cmd in commands.items():
        if shutil.which(cmd[0]) is None and not os.path.exists(cmd[0]):
            out[language] = None
            continue
        latencies = []
        for i in range(runs + 2):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            if i >= 2:
                latencies.append(time.perf_counter() - t0)
        out[language] = summary(latencies)
    return out


def verdict(name, value):
    op, bound = TARGETS[name]
    if value is None:
        return "-"
    met = value <= bound if op == "<=" else value >= bound
    return f"{'met' if met else 'MISS'} ({op} {bound})"


def measure(address, namespace, work):
    runs, concurrent_runs = knob("BENCH_EXEC_RUNS", 40), knob("BENCH_EXEC_CONCURRENT_RUNS", 160)
    clients = knob("BENCH_EXEC_CLIENTS", 8)
    print("--- execute: pool on", file=sys.stderr, flush=True)
    pool = through_service(address, work, "pool", ["--pool", str(clients)], runs, concurrent_runs, clients, True)
    print("--- execute: pool off", file=sys.stderr, flush=True)
    off = through_service(address, work, "off", ["--pool", "0"], runs, concurrent_runs, clients, False)
    print("--- execute: ctr run --rm and native", file=sys.stderr, flush=True)
    ctr = through_ctr(address, namespace, work, min(runs, 20))
    nat = native(work, min(runs, 20))
    results = {"config": {"runs": runs, "concurrent_runs": concurrent_runs, "clients": clients},
               "service": pool, "service_pool_off": off, "ctr_run": ctr, "native": nat,
               "warm_slots": pool.get("warm_slots")}
    at = f"{clients} clients"
    py, js = pool["python"]["1 client"]["p50_ms"], pool["javascript"]["1 client"]["p50_ms"]
    py_native = (nat.get("python") or {}).get("p50_ms")
    values = {
        "python_p50_ms": py,
        "python_p50_vs_native": round(py / py_native, 2) if py_native else None,
        "javascript_p50_ms": js,
        "javascript_per_s_at_8": pool["javascript"][at]["per_s"],
        "p99_vs_p50_at_8": max(round(pool[l][at]["p99_ms"] / pool[l][at]["p50_ms"], 2) for l in HELLO),
    }
    results["ratios"] = {
        l: {"pool_vs_ctr_run": round(pool[l]["1 client"]["p50_ms"] / ctr[l]["p50_ms"], 3),
            "pool_vs_pool_off": round(pool[l]["1 client"]["p50_ms"] / off[l]["1 client"]["p50_ms"], 3),
            "pool_vs_native": round(pool[l]["1 client"]["p50_ms"] / nat[l]["p50_ms"], 2) if nat.get(l) else None}
        for l in HELLO}
    results["targets"] = {k: {"value": v, "target": f"{TARGETS[k][0]} {TARGETS[k][1]}", "verdict": verdict(k, v)}
                          for k, v in values.items()}
    return results


def span_medians(logs, span_re):
    """Median ms of each shim span (bench.py's shim_log and SPAN), for the warm slots of each language and for
    the executions' own containers (all languages): where a container's time goes, done ahead for a warm slot."""
    groups = {f"{l} warm slot": f"wsbx-warm-{l}-" for l in WARM}
    groups["own container (any language)"] = "wsbx-run-"
    out = {}
    for label, prefix in groups.items():
        spans = {}
        for cid, lines in logs.items():
            if cid.startswith(prefix):
                for _, msg in lines:
                    m = span_re.match(msg)
                    if m:
                        spans.setdefault(m[1], []).append(float(m[2]))
        out[label] = {name: round(statistics.median(v), 1) for name, v in spans.items()}
    return out


def report(results, table):
    at = f"{results['config']['clients']} clients"
    rows = []
    for language in HELLO:
        for label, src in (("service, warm pool", results["service"]), ("service, pool off", results["service_pool_off"])):
            one, many = src[language]["1 client"], src[language][at]
            rows.append([language, label, one["p50_ms"], one["p90_ms"], one["p99_ms"], one["warm"], many["p50_ms"],
                         many["p90_ms"], many["p99_ms"], many["per_s"], many["service_cpu_ms_per_exec"], many["warm"]])
        c, n = results["ctr_run"][language], results["native"].get(language) or {}
        rows.append([language, "ctr run --rm + shim", c["p50_ms"], c["p90_ms"], c["p99_ms"]] + [None] * 7)
        rows.append([language, "native process", n.get("p50_ms"), n.get("p90_ms"), n.get("p99_ms")] + [None] * 7)
    table(f"Execute: hello at the HTTP API (ms), 1 client ({results['config']['runs']} runs) and {at} "
          f"({results['config']['concurrent_runs']} runs); warm = runs that took a warm slot",
          ["language", "path", "p50", "p90", "p99", "warm", f"p50@{results['config']['clients']}", "p90", "p99",
           "exec/s", "svc CPU ms", "warm"], rows)
    table("Execute ratios (p50, 1 client)", ["language", "pool vs ctr run", "pool vs pool off", "pool vs native"],
          [[l, r["pool_vs_ctr_run"], r["pool_vs_pool_off"], r["pool_vs_native"]] for l, r in results["ratios"].items()])
    spans = results.get("spans", {})
    names = sorted({n for v in spans.values() for n in v})
    if names:
        table("Execute: the shim's spans, median ms (a warm slot's `run` includes its wait for the request)",
              ["span"] + list(spans), [[n] + [spans[g].get(n) for g in spans] for n in names])
    print("(warm slots: " + ", ".join(f"{l} {v['slots']:.0f} of {v['mib']} MiB each" for l, v in results["warm_slots"].items()) + ")")
    table("Targets (issue 13) for the execute service", ["figure", "value", "verdict"],
          [[k, v["value"], v["verdict"]] for k, v in results["targets"].items()])
