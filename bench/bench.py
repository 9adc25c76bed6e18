#!/usr/bin/env python3
"""`make bench`: this shim side by side with runc, an optional extra runtime, the `wasmedge` CLI (AOT)
and native code, all on one private containerd that bench/run.sh has started and filled with images.

Measures `ctr run --rm` latency (p50/p90) with a start-up breakdown from containerd's event stream,
compute speed against native (images/primes), PSS/RSS per idle container, and runs per second with
several `ctr run --rm` in parallel. Prints tables and writes every figure to --out as JSON.

Knobs (environment): BENCH_RUNS (30), BENCH_WARMUP (3), BENCH_PRIMES_N (2000000),
BENCH_COMPUTE_RUNS (3, container runs of primes; the first is reported apart), BENCH_IDLE ("10,50"),
BENCH_PARALLEL (4), BENCH_PARALLEL_RUNS (100), BENCH_EXTRA_RUNTIME (unset: no extra runtime), BENCH_EXECUTE (1: the
execute service's section, bench/execute.py, with knobs of its own; 0: without it; only: it alone).
"""
import argparse
import concurrent.futures
import datetime
import itertools
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import execute

HELLO = "docker.io/library/hello-wasm:bench"
PRIMES = "docker.io/library/primes-wasm:bench"
BUSYBOX = "docker.io/library/busybox:bench"
RUNC = "io.containerd.runc.v2"
SHIM = "io.containerd.wasmedge.v1"

# The targets for this shim: figure -> (comparison, bound).
TARGETS = {
    "latency_p50_vs_runc": ("<=", 0.5),
    "compute_speed_vs_native": (">=", 0.9),
    "idle_pss_mib_at_50": ("<=", 4.0),
    "throughput_vs_runc": (">=", 2.0),
}


def knob(name: str, default):
    value = os.environ.get(name)
    return default if value in (None, "") else type(default)(value)


@dataclass
class Runtime:
    """A containerd runtime and the container commands it is measured with."""
    label: str
    runtime: str
    image: str
    hello: list            # args of a short run (empty: the image's own entrypoint)
    expect: str            # what the short run prints
    sleep: list            # args of an idle container
    platform: str = ""
    primes: bool = False   # can run the primes wasm image

    def run_args(self, image=None) -> list:
        args = ["--runtime", self.runtime]
        if self.platform:
            args += ["--platform", self.platform]
        return args + [image or self.image]


def runtimes() -> list:
    wasm = dict(image=HELLO, hello=[], expect="Hello from WasmEdge!", sleep=["/app.wasm", "sleep", "3600"],
                platform="wasi/wasm", primes=True)
    found = [
        Runtime("runc", RUNC, BUSYBOX, ["/bin/busybox", "echo", "hello"], "hello",
                ["/bin/busybox", "sleep", "3600"]),
        Runtime("wasmedge shim", SHIM, **wasm),
    ]
    extra = os.environ.get("BENCH_EXTRA_RUNTIME", "")
    if extra:
        found.append(Runtime(f"extra: {os.path.basename(extra)}", extra, **wasm))
    return found


# ---------------------------------------------------------------------------------------- ctr

class Ctr:
    def __init__(self, address: str, namespace: str):
        self.base = ["ctr", "-a", address, "-n", namespace]
        self.address = address
        self.ids = itertools.count(1)
        self.failures = []  # runs that failed and were retried: a benchmark should not hide them

    def __call__(self, *args, timeout=120, check=True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.base + list(args), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def attempt(self, rt: Runtime, prefix: str, action, tries: int = 3):
        """action(container id) with a fresh id; a failure is recorded and retried, twice at most."""
        for _ in range(tries):
            cid = f"{prefix}-{next(self.ids)}"
            try:
                return cid, action(cid)
            except RuntimeError as e:
                self.failures.append({"runtime": rt.label, "id": cid, "error": str(e)})
                print(f"warning: {rt.label}: {cid}: {e} (retrying)", file=sys.stderr, flush=True)
        raise RuntimeError(f"{rt.label}: {tries} failures in a row, the last: {self.failures[-1]['error']}")

    def run_rm(self, rt: Runtime, prefix: str, args=None, image=None, expect=None, timeout=120):
        """`ctr run --rm`; returns (container id, wall seconds, start time, completed process)."""
        def run(cid):
            start = time.time()
            t0 = time.perf_counter()
            done = self("run", "--rm", *rt.run_args(image), cid, *(rt.hello if args is None else args),
                        timeout=timeout, check=False)
            elapsed = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(f"ctr run exited {done.returncode}: {done.stderr.strip()}")
            if expect is not None and expect not in done.stdout:
                raise RuntimeError(f"expected {expect!r}, got {done.stdout!r} {done.stderr!r}")
            return elapsed, start, done
        cid, (elapsed, start, done) = self.attempt(rt, prefix, run)
        return cid, elapsed, start, done

    def hello(self, rt: Runtime, prefix: str):
        cid, elapsed, start, _ = self.run_rm(rt, prefix, expect=rt.expect)
        return cid, start, elapsed


def percentile(values, p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


# ------------------------------------------------------------------------------------ latency

def latency(ctr: Ctr, rts: list, runs: int, warmup: int, events_log: str, containerd_log: str):
    """Interleaved `ctr run --rm` of each runtime's hello; containerd's events are logged meanwhile."""
    for rt in rts:
        for _ in range(warmup):
            ctr.hello(rt, "warm")
    times = {rt.label: [] for rt in rts}
    invocations = {}
    with open(events_log, "w") as out:
        events = subprocess.Popen(ctr.base + ["events"], stdout=out, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            for _ in range(runs):
                for j, rt in enumerate(rts):
                    cid, start, elapsed = ctr.hello(rt, f"lat{j}")
                    times[rt.label].append(elapsed)
                    invocations[cid] = (rt.label, start, start + elapsed)
            time.sleep(0.3)
        finally:
            events.terminate()
            events.wait()
    base = statistics.median(times[rts[0].label])
    result = {}
    for rt in rts:
        t = times[rt.label]
        p50 = statistics.median(t)
        result[rt.label] = {"runtime": rt.runtime, "runs": len(t), "p50_ms": round(p50 * 1000, 1),
                            "p90_ms": round(percentile(t, 90) * 1000, 1), "min_ms": round(min(t) * 1000, 1),
                            "p50_vs_runc": ratio(p50, base)}
    time.sleep(0.5)  # let the shims' last log lines reach containerd's log
    return result, breakdown(events_log, containerd_log, invocations, [rt.label for rt in rts])


def floor(hello_wasm: str, work: str, runs: int = 10) -> dict:
    """What bare processes cost, without containerd: busybox echo, hello in the wasmedge CLI (AOT),
    and exec'ing each of this shim's binaries in a way that makes it exit at once, after the dynamic
    loader has loaded its libraries (libwasmedge and libLLVM in the one that links WasmEdge)."""
    aot = os.path.join(work, "hello-aot.wasm")
    timed(["wasmedge", "compile", hello_wasm, aot])
    commands = {"busybox echo": ["/bin/busybox", "echo", "hello"],
                "wasmedge CLI AOT hello": ["wasmedge", *aot_mode(), aot]}
    for binary, args in (("containerd-shim-wasmedge-v1", ["-v"]), ("containerd-wasmedge-init", [])):
        if shutil.which(binary):
            commands[f"{binary} {' '.join(args)} (exec, load, exit)".replace("  ", " ")] = [binary, *args]

    def once(cmd):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        return time.perf_counter() - t0
    return {name: round(statistics.median(once(cmd) for _ in range(runs)) * 1000, 1)
            for name, cmd in commands.items()}


# The phases of one `ctr run --rm`, between the harness's clock and containerd's event timestamps.
PHASES = [
    ("ctr start, image lookup -> snapshot prepared", "invoke", "/snapshot/prepare"),
    ("snapshot prepared -> container created", "/snapshot/prepare", "/containers/create"),
    ("container created -> task created (shim start + Create)", "/containers/create", "/tasks/create"),
    ("task created -> task started (Start)", "/tasks/create", "/tasks/start"),
    ("task started -> exited (the workload runs)", "/tasks/start", "exited"),
    ("exited -> task deleted", "exited", "/tasks/delete"),
    ("task deleted -> container deleted", "/tasks/delete", "/containers/delete"),
    ("container deleted -> ctr exits", "/containers/delete", "return"),
]
EVENT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? \+0000 UTC \S+ (\S+) (.*)$")


def parse_events(path: str) -> dict:
    """{container id: {topic: unix time}} from `ctr events` output."""
    by_id = {}
    with open(path) as f:
        for line in f:
            m = EVENT.match(line.strip())
            if not m:
                continue
            secs = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            at = secs + float("0." + (m[2] or "0"))
            try:
                body = json.loads(m[4])
            except ValueError:
                continue
            cid = body.get("container_id") or body.get("id") or body.get("key")
            if cid:
                by_id.setdefault(cid, {})[m[3]] = at
                exited = body.get("exited_at")
                if m[3] == "/tasks/exit" and exited:
                    by_id[cid]["exited"] = exited.get("seconds", 0) + exited.get("nanos", 0) / 1e9
    return by_id


LOG_LINE = re.compile(r'^time="([^"]+)" level=\w+ msg="((?:[^"\\]|\\.)*)"')


def shim_log(path: str) -> dict:
    """{container id: [(unix time, message)]} of the lines a shim logs as `<id>: <message>` (ours
    does) in containerd's log."""
    by_id = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = LOG_LINE.match(line)
            if not m or ": " not in m[2]:
                continue
            cid, msg = m[2].split(": ", 1)
            stamp, _, frac = m[1].rstrip("Z").partition(".")
            try:
                at = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(
                    tzinfo=datetime.timezone.utc).timestamp() + float("0." + (frac or "0"))
            except ValueError:
                continue
            by_id.setdefault(cid, []).append((at, msg))
    return by_id


def log_kind(msg: str) -> str:
    """A log message without its particulars: `aot cache Hit: /x.so` -> `aot cache Hit`."""
    return re.sub(r"\d+", "N", msg.split(": ", 1)[0])[:60]


# A span the shim logs (src/trace): `span load 1.9 ms aot=hit`.
SPAN_MEANING = {
    "prepare": "Task.Create: config.json, rootfs mount, stdio, classify, cgroup",
    "spawn": "Task.Create: the zygote forks the container process",
    "create": "Task.Create in all",
    "start": "Task.Start: the plan is sent",
    "setup": "container process: namespaces joined, mounts",
    "load": "container process: module read, AOT cache hit (or compile), loaded",
    "confine": "container process: cgroup, pivot_root, privileges dropped",
    "instantiate": "container process: WASI and the module instantiated",
    "run": "container process: _start runs",
    "exit": "the module's end -> TaskExit published by the shim",
    "delete": "Task.Delete: cgroup removed, rootfs unmounted",
    "container": "Task.Create -> Task.Delete",
}
SPAN = re.compile(r"^span (\S+) ([0-9.]+) ms")


def breakdown(events_log: str, containerd_log: str, invocations: dict, labels: list) -> dict:
    """Median milliseconds of each phase, per runtime, of each span the shim logged, and of each
    other shim log line after `ctr run`."""
    events, logs = parse_events(events_log), shim_log(containerd_log)
    samples = {label: {name: [] for name, _, _ in PHASES} for label in labels}
    lines = {label: {} for label in labels}
    span_ms = {label: {} for label in labels}
    for cid, (label, start, end) in invocations.items():
        marks = dict(events.get(cid, {}), invoke=start, **{"return": end})
        for name, a, b in PHASES:
            if a in marks and b in marks:
                samples[label][name].append(marks[b] - marks[a])
        for at, msg in logs.get(cid, []):
            span = SPAN.match(msg)
            if span:
                span_ms[label].setdefault(span[1], []).append(float(span[2]) / 1000)
            else:
                lines[label].setdefault(log_kind(msg), []).append(at - start)

    def ms(values):
        return round(statistics.median(values) * 1000, 1) if values else None
    phases = {label: {name: ms(v) for name, v in by_phase.items()} for label, by_phase in samples.items()}
    timeline = {label: dict(sorted(((k, ms(v)) for k, v in by_kind.items()), key=lambda kv: kv[1]))
                for label, by_kind in lines.items() if by_kind}
    spans = {label: {name: ms(v) for name, v in by_name.items()} for label, by_name in span_ms.items() if by_name}
    return {"phases": phases, "spans": spans, "shim_log_ms_after_invoke": timeline}


# ------------------------------------------------------------------------------------ compute

COMPUTE_MS = re.compile(r"compute_ms=([0-9.]+)")


def compute_ms(stderr: str) -> float:
    m = COMPUTE_MS.search(stderr)
    if not m:
        raise RuntimeError(f"no compute_ms in output: {stderr!r}")
    return float(m[1])


def timed(cmd: list, timeout=600):
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return wall, done


def summary(samples: list, **extra) -> dict:
    """samples: [(wall s, compute ms)]"""
    return {"runs": len(samples), "compute_ms": round(statistics.median(c for _, c in samples), 1),
            "wall_ms": round(statistics.median(w for w, _ in samples) * 1000, 1), **extra}


def aot_mode() -> list:
    """WasmEdge 0.17 runs a compiled module in the interpreter unless told `--run-mode=aot`."""
    help_text = subprocess.run(["wasmedge", "run", "--help"], capture_output=True, text=True).stdout
    return ["--run-mode=aot"] if "--run-mode" in help_text else []


def aot_outcomes(containerd_log: str, ids: list) -> list:
    """What the shim logged about its AOT cache for each container (`aot cache Hit` -> `Hit`)."""
    time.sleep(0.3)
    logs = shim_log(containerd_log)
    found = []
    for cid in ids:
        kinds = [m for _, m in logs.get(cid, []) if re.match(r"(?i)aot|cannot load|.*interpreter", m)]
        found.append("; ".join(log_kind(k).removeprefix("aot cache ") for k in kinds) or None)
    return found


def compute(ctr: Ctr, rts: list, wasm: str, native: str, work: str, n: int, container_runs: int,
            containerd_log: str) -> dict:
    result = {}
    runs = 5
    samples = []
    for _ in range(runs):
        wall, done = timed([native, str(n)])
        samples.append((wall, compute_ms(done.stderr)))
    result["native"] = summary(samples)

    aot = os.path.join(work, "primes-aot.wasm")
    compile_s, _ = timed(["wasmedge", "compile", wasm, aot])
    samples = []
    for _ in range(runs):
        wall, done = timed(["wasmedge", *aot_mode(), aot, str(n)])
        samples.append((wall, compute_ms(done.stderr)))
    result["wasmedge CLI AOT"] = summary(samples, compile_ms=round(compile_s * 1000, 1))

    for j, rt in enumerate(r for r in rts if r.primes):
        samples, ids = [], []
        for _ in range(container_runs):
            cid, wall, _, done = ctr.run_rm(rt, f"primes{j}", ["/app.wasm", str(n)], PRIMES, timeout=600)
            ids.append(cid)
            samples.append((wall, compute_ms(done.stderr)))
        aot = aot_outcomes(containerd_log, ids)
        label = f"{rt.label} (primes)"
        result[f"{label}, run 1"] = summary(samples[:1], aot_cache=aot[0])
        if len(samples) > 1:
            result[f"{label}, runs 2+"] = summary(samples[1:], aot_cache=", ".join(sorted(set(map(str, aot[1:])))))
    base = result["native"]["compute_ms"]
    for row in result.values():
        row["speed_vs_native"] = ratio(base, row["compute_ms"])
    return result


# --------------------------------------------------------------------------------------- idle

def processes() -> dict:
    """{pid: (ppid, argv)} of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        found[int(entry)] = (ppid, argv)
    return found


def container_processes(address: str, task_pids: set) -> tuple:
    """The shims started for our containerd (`-address <our socket>`), the tasks' processes, the
    process each task's process is a child of when that is not a shim (this shim's zygote, shared
    by all containers on the node), and all their descendants."""
    procs = processes()
    shims = {pid for pid, (_, argv) in procs.items()
             if any(a == "-address" and b == address for a, b in zip(argv, argv[1:]))}
    parents = {procs[p][0] for p in task_pids if p in procs} - shims - {1}
    members = shims | parents | (task_pids & procs.keys())
    frontier = set(members)
    while frontier:
        frontier = {pid for pid, (ppid, _) in procs.items() if ppid in frontier} - members
        members |= frontier
    return shims, members


def memory_kib(pid: int) -> dict:
    """Rss, Pss and Pss_Anon in KiB from /proc/PID/smaps_rollup (zeros once the process is gone)."""
    values = dict.fromkeys(("Rss", "Pss", "Pss_Anon"), 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def idle(ctr: Ctr, rt: Runtime, counts: list) -> dict:
    """Start idle containers up to each count, then sum PSS/RSS of their processes per container."""
    result, started = {}, []
    try:
        for count in counts:
            while len(started) < count:
                cid, _ = ctr.attempt(rt, "idle", lambda cid: ctr("run", "-d", *rt.run_args(), cid, *rt.sleep))
                started.append(cid)
            time.sleep(2)  # let the last ones settle
            tasks = ctr("task", "ls").stdout.splitlines()[1:]
            task_pids = {int(line.split()[1]) for line in tasks if len(line.split()) > 1}
            shims, members = container_processes(ctr.address, task_pids)
            mem = {pid: memory_kib(pid) for pid in members}

            def per_container(key, pids=members):
                return round(sum(mem[p][key] for p in pids) / 1024 / count, 2)
            result[str(count)] = {
                "pss_mib": per_container("Pss"), "rss_mib": per_container("Rss"),
                "pss_anon_mib": per_container("Pss_Anon"), "shim_pss_mib": per_container("Pss", shims),
                "container_pss_mib": per_container("Pss", members - shims),
                "processes": len(members), "shims": len(shims)}
    finally:
        remove(ctr, started)
    return result


def remove(ctr: Ctr, ids: list) -> None:
    def one(cid):
        ctr("task", "delete", "-f", cid, check=False)
        ctr("container", "delete", cid, check=False)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(one, ids))


# --------------------------------------------------------------------------------- throughput

TICK = os.sysconf("SC_CLK_TCK")


def cpu_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_of_children() -> float:
    """CPU seconds of this process's waited-for children (the ctr commands)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def throughput(ctr: Ctr, rt: Runtime, runs: int, parallel: int, j: int, containerd_pid: int) -> dict:
    """Runs per second, and where the CPU time of a run goes: ctr, containerd, and the rest of the
    machine (the shims, runc, the containers, the kernel's work for them, and any other load)."""
    before = (cpu_busy(), cpu_of(containerd_pid), cpu_of_children())
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _: ctr.hello(rt, f"par{j}"), range(runs)))
    elapsed = time.perf_counter() - t0
    busy, containerd, ctr_cpu = (b - a for a, b in zip(before, (cpu_busy(), cpu_of(containerd_pid), cpu_of_children())))
    per_run = {"ctr": ctr_cpu, "containerd": containerd, "rest": busy - ctr_cpu - containerd, "all": busy}
    return {"runs": runs, "parallel": parallel, "seconds": round(elapsed, 2), "runs_per_s": round(runs / elapsed, 2),
            "cpu_ms_per_run": {k: round(v * 1000 / runs, 1) for k, v in per_run.items()}}


# ------------------------------------------------------------------------------------- report

def table(title: str, header: list, rows: list) -> None:
    cells = [header] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title}")
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def verdict(name: str, value) -> str:
    op, bound = TARGETS[name]
    if value is None:
        return "-"
    met = value <= bound if op == "<=" else value >= bound
    return f"{'met' if met else 'MISS'} ({op} {bound})"


def targets(results: dict, shim: str, shim_primes: str) -> dict:
    lat = results["latency"][shim]["p50_vs_runc"]
    speed = results["compute"].get(shim_primes, {}).get("speed_vs_native")
    idle50 = results["idle"].get(shim, {}).get("50", {}).get("pss_mib")
    tput = results["throughput"][shim]["vs_runc"]
    values = {"latency_p50_vs_runc": lat, "compute_speed_vs_native": speed,
              "idle_pss_mib_at_50": idle50, "throughput_vs_runc": tput}
    return {name: {"value": v, "target": f"{TARGETS[name][0]} {TARGETS[name][1]}", "verdict": verdict(name, v)}
            for name, v in values.items()}


def report(results: dict, rts: list) -> None:
    lat, runc = results["latency"], rts[0].label
    table(f"ctr run --rm latency, hello (runc: busybox echo), {results['config']['runs']} runs each, interleaved, after "
          f"{results['config']['warmup']} warm-up", ["runtime", "p50 ms", "p90 ms", "min ms", "p50 vs runc"],
          [[k, v["p50_ms"], v["p90_ms"], v["min_ms"], v["p50_vs_runc"]] for k, v in lat.items()])
    phases = results["breakdown"]["phases"]
    labels = list(phases)
    table("Where a ctr run --rm goes (median ms between containerd's event timestamps)", ["phase"] + labels,
          [[name] + [phases[label][name] for label in labels] for name, _, _ in PHASES])
    for label, spans in results["breakdown"]["spans"].items():
        table(f"{label}: spans inside the runtime, median ms (src/trace; the same spans go to OTLP)",
              ["span", "what", "ms"], [[name, SPAN_MEANING.get(name, ""), v] for name, v in spans.items()])
    for label, timeline in results["breakdown"]["shim_log_ms_after_invoke"].items():
        table(f"{label}: the shim's log lines, median ms after ctr run was invoked", ["log line", "ms"],
              list(timeline.items()))
    table("For reference, bare processes without containerd (median ms)", ["command", "ms"],
          list(results["floor"].items()))
    table(f"Compute: sum of primes below {results['config']['primes_n']} (median; compute = timed inside the "
          "program, wall = whole command)", ["runner", "runs", "compute ms", "wall ms", "speed vs native", "aot cache"],
          [[k, v["runs"], v["compute_ms"], v["wall_ms"], v["speed_vs_native"], v.get("aot_cache")]
           for k, v in results["compute"].items()])
    aot = results["compute"]["wasmedge CLI AOT"]
    print(f"(wasmedge compile of primes.wasm took {aot['compile_ms']} ms)")
    rows = []
    for label, by_count in results["idle"].items():
        for count, v in by_count.items():
            base = results["idle"][runc][count]
            rows.append([label, count, v["pss_mib"], ratio(v["pss_mib"], base["pss_mib"]), v["rss_mib"],
                         v["pss_anon_mib"], v["shim_pss_mib"], v["container_pss_mib"], v["processes"], v["shims"]])
    table("Idle containers (`sleep`): memory per container, MiB (anon = PSS of private anonymous memory; "
          "shim / container = PSS of the shims / of their children)",
          ["runtime", "N", "PSS", "PSS vs runc", "RSS", "anon", "shim", "container", "processes", "shims"], rows)
    table(f"Throughput: {results['config']['parallel_runs']} x ctr run --rm hello (runc: busybox echo), "
          f"{results['config']['parallel']} in parallel", ["runtime", "seconds", "runs/s", "vs runc"],
          [[k, v["seconds"], v["runs_per_s"], v["vs_runc"]] for k, v in results["throughput"].items()])
    table(f"CPU time per run in the throughput test, ms ({os.cpu_count()} CPUs; rest = shims, runc, containers, "
          "kernel work for them, and any other load)", ["runtime", "ctr", "containerd", "rest", "all"],
          [[k] + [v["cpu_ms_per_run"][c] for c in ("ctr", "containerd", "rest", "all")]
           for k, v in results["throughput"].items()])
    if results["failures"]:
        print(f"\n!! {len(results['failures'])} runs failed and were retried (all in the JSON), e.g. "
              f"{results['failures'][0]['runtime']}: {results['failures'][0]['error']}")
    table("Targets (issue 6) for the wasmedge shim", ["figure", "value", "verdict"],
          [[k, v["value"], v["verdict"]] for k, v in results["targets"].items()])


def versions() -> dict:
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    return {"containerd": first_line(["containerd", "--version"]), "runc": first_line(["runc", "--version"]),
            "wasmedge": first_line(["wasmedge", "--version"]), "kernel": platform.release(),
            "cpus": os.cpu_count(), "commit": first_line(["git", "describe", "--always", "--dirty"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--work", required=True, help="scratch directory")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--containerd-log", required=True, help="where containerd (and the shims) log")
    ap.add_argument("--containerd-pid", required=True, type=int, help="for its CPU time")
    ap.add_argument("--hello-wasm", required=True)
    ap.add_argument("--primes-wasm", required=True)
    ap.add_argument("--primes-native", required=True)
    a = ap.parse_args()
    config = {"runs": knob("BENCH_RUNS", 30), "warmup": knob("BENCH_WARMUP", 3),
              "primes_n": knob("BENCH_PRIMES_N", 2000000), "compute_runs": knob("BENCH_COMPUTE_RUNS", 3),
              "idle": [int(c) for c in knob("BENCH_IDLE", "10,50").split(",")],
              "parallel": knob("BENCH_PARALLEL", 4), "parallel_runs": knob("BENCH_PARALLEL_RUNS", 100)}
    ctr = Ctr(a.address, a.namespace)
    rts = runtimes()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "host": versions(), "config": config}

    def phase(name):
        print(f"--- {name}", file=sys.stderr, flush=True)

    if os.environ.get("BENCH_EXECUTE") == "only":
        results["execute"] = execute.measure(a.address, a.namespace, a.work)
        results["execute"]["spans"] = execute.span_medians(shim_log(a.containerd_log), SPAN)
        execute.report(results["execute"], table)
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)
        return
    phase("latency")
    results["latency"], results["breakdown"] = latency(ctr, rts, config["runs"], config["warmup"],
                                                       os.path.join(a.work, "events.log"), a.containerd_log)
    results["floor"] = floor(a.hello_wasm, a.work)
    phase("compute")
    results["compute"] = compute(ctr, rts, a.primes_wasm, a.primes_native, a.work, config["primes_n"],
                                 config["compute_runs"], a.containerd_log)
    phase("idle memory")
    results["idle"] = {rt.label: idle(ctr, rt, config["idle"]) for rt in rts}
    phase("throughput")
    results["throughput"] = {rt.label: throughput(ctr, rt, config["parallel_runs"], config["parallel"], j,
                                                      a.containerd_pid)
                             for j, rt in enumerate(rts)}
    base = results["throughput"][rts[0].label]["runs_per_s"]
    for row in results["throughput"].values():
        row["vs_runc"] = ratio(row["runs_per_s"], base)
    shim = rts[1].label
    results["targets"] = targets(results, shim, f"{shim} (primes), runs 2+")
    if os.environ.get("BENCH_EXECUTE", "1") != "0":
        phase("execute")
        results["execute"] = execute.measure(a.address, a.namespace, a.work)
        results["execute"]["spans"] = execute.span_medians(shim_log(a.containerd_log), SPAN)

    results["failures"] = ctr.failures

    report(results, rts)
    if "execute" in results:
        execute.report(results["execute"], table)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nFigures written to {a.out}")


if __name__ == "__main__":
    main()
