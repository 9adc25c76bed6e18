// The JavaScript side of the runtime: console, process, require('fs'), timers and stdin, built on
// the `__host` object main.rs installs. Kept close to Node where it is cheap: console.log
// formats like util.inspect, process.argv is [runtime, script, ...args], fs reads and writes
// text (there is no Buffer: readFileSync always returns a string).
(function () {
  "use strict";
  const host = globalThis.__host;
  const hidden = (name, value) =>
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });

  // --- util.inspect, abridged -------------------------------------------------------------
  const isIdent = (k) => /^[A-Za-z_$][\w$]*$/.test(k);
  const quote = (s) => "'" + s.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n") + "'";

  function inspect(v, depth = 2, seen = [], top = true) {
    switch (typeof v) {
      case "string": return top ? v : quote(v);
      case "number": return Object.is(v, -0) ? "-0" : String(v);
      case "bigint": return v + "n";
      case "undefined": return "undefined";
      case "boolean": return String(v);
      case "symbol": return v.toString();
      case "function": return v.name ? `[Function: ${v.name}]` : "[Function (anonymous)]";
    }
    if (v === null) return "null";
    if (seen.includes(v)) return "[Circular *1]";
    if (v instanceof Error) return v.stack ? errorText(v) : `${v.name}: ${v.message}`;
    if (v instanceof Date) return isNaN(v) ? "Invalid Date" : v.toISOString();
    if (v instanceof RegExp) return v.toString();
    if (v instanceof Promise) return "Promise { <pending> }";
    const inner = (x) => inspect(x, depth - 1, seen.concat([v]), false);
    let open = "{", close = "}", items = [], prefix = "";
    if (Array.isArray(v)) {
      if (depth < 0) return "[Array]";
      open = "["; close = "]";
      const n = Math.min(v.length, 100);
      for (let i = 0; i < n; i++) items.push(i in v ? inner(v[i]) : "<empty>");
      if (v.length > n) items.push(`... ${v.length - n} more items`);
    } else if (v instanceof Map) {
      if (depth < 0) return "[Map]";
      prefix = `Map(${v.size}) `;
      for (const [k, x] of v) items.push(`${inner(k)} => ${inner(x)}`);
    } else if (v instanceof Set) {
      if (depth < 0) return "[Set]";
      prefix = `Set(${v.size}) `;
      for (const x of v) items.push(inner(x));
    } else if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      prefix = `${v.constructor.name}(${v.length}) `;
      open = "["; close = "]";
      for (const x of Array.prototype.slice.call(v, 0, 100)) items.push(String(x));
    } else {
      const ctor = Object.getPrototypeOf(v);
      const name = ctor === null ? "[Object: null prototype]" : ctor.constructor && ctor.constructor.name;
      if (depth < 0) return name && name !== "Object" ? `[${name}]` : "[Object]";
      if (name && name !== "Object") prefix = name + " ";
    }
    // Own enumerable properties (an array's extra ones too).
    for (const k of Object.keys(v)) {
      if (Array.isArray(v) && /^\d+$/.test(k)) continue;
      items.push(`${isIdent(k) ? k : quote(k)}: ${inner(v[k])}`);
    }
    if (items.length === 0) return prefix + (open === "[" ? "[]" : "{}");
    const oneLine = `${prefix}${open} ${items.join(", ")} ${close}`;
    if (oneLine.length <= 72 && !items.some((s) => s.includes("\n"))) return oneLine;
    const indent = (s) => s.split("\n").join("\n  ");
    return `${prefix}${open}\n  ${items.map(indent).join(",\n  ")}\n${close}`;
  }

  function format(args) {
    let out = "";
    let i = 0;
    if (typeof args[0] === "string" && args.length > 1 && args[0].includes("%")) {
      i = 1;
      out = args[0].replace(/%([sdifjoOc%])/g, (m, c) => {
        if (c === "%") return "%";
        if (i >= args.length) return m;
        const a = args[i++];
        switch (c) {
          case "s": return typeof a === "string" ? a : inspect(a, 1, [], false);
          case "d": case "i": return typeof a === "object" ? "NaN" : String(c === "i" ? parseInt(a) : Number(a));
          case "f": return String(parseFloat(a));
          case "j": return JSON.stringify(a);
          case "c": return "";
          default: return inspect(a, 4, [], false);
        }
      });
      if (i < args.length) out += " ";
    }
    return out + args.slice(i).map((a) => inspect(a)).join(" ");
  }

  function errorText(e) {
    if (!(e instanceof Error)) return "Uncaught " + inspect(e, 2, [], false);
    const head = `${e.name}: ${e.message}`;
    const stack = typeof e.stack === "string" ? e.stack.replace(/\n$/, "") : "";
    return stack.startsWith(head) ? stack : stack ? `${head}\n${stack}` : head;
  }
  hidden("__formatUncaught", (e) => (e instanceof Error ? "Uncaught " + errorText(e) : errorText(e)));

  // --- console ------------------------------------------------------------------------------
  let groupIndent = "";
  const counts = new Map(), timers = new Map();
  const emit = (fd, args) => {
    const text = format(args);
    host.write(fd, (groupIndent ? groupIndent + text.split("\n").join("\n" + groupIndent) : text) + "\n");
  };
  const console = {
    log: (...a) => emit(1, a),
    info: (...a) => emit(1, a),
    debug: (...a) => emit(1, a),
    error: (...a) => emit(2, a),
    warn: (...a) => emit(2, a),
    trace: (...a) => emit(2, ["Trace: " + format(a) + "\n" + (new Error().stack || "")]),
    dir: (v) => emit(1, [inspect(v, 2, [], false)]),
    assert: (ok, ...a) => { if (!ok) emit(2, ["Assertion failed" + (a.length ? ": " + format(a) : "")]); },
    count: (label = "default") => { counts.set(label, (counts.get(label) || 0) + 1); emit(1, [`${label}: ${counts.get(label)}`]); },
    countReset: (label = "default") => counts.delete(label),
    group: (...a) => { if (a.length) emit(1, a); groupIndent += "  "; },
    groupEnd: () => { groupIndent = groupIndent.slice(2); },
    time: (label = "default") => timers.set(label, host.now()),
    timeEnd: (label = "default") => {
      if (timers.has(label)) emit(1, [`${label}: ${(host.now() - timers.get(label)).toFixed(3)}ms`]);
      timers.delete(label);
    },
    table: (v) => emit(1, [v]),
  };
  hidden("console", console);

  // --- process ------------------------------------------------------------------------------
  const stream = (fd) => ({ write: (s) => { host.write(fd, String(s)); return true; }, isTTY: false, fd });
  const process = {
    argv: host.args.slice(),
    argv0: host.args[0],
    execPath: host.args[0],
    env: host.env,
    exitCode: undefined,
    platform: "wasi",
    arch: "wasm32",
    pid: 1,
    version: "v0.0.0-quickjs",
    versions: { quickjs: "rquickjs" },
    exit: (code) => host.exit(code === undefined ? (process.exitCode | 0) : code | 0),
    cwd: () => host.env.PWD || "/",
    stdout: stream(1),
    stderr: stream(2),
    stdin: { fd: 0, isTTY: false, readLine: () => host.readLine() },
    nextTick: (fn, ...a) => queueMicrotask(() => fn(...a)),
    hrtime: Object.assign((prev) => {
      const ns = BigInt(Math.round(host.now() * 1e6));
      const t = [Number(ns / 1000000000n), Number(ns % 1000000000n)];
      return prev ? [t[0] - prev[0], t[1] - prev[1]] : t;
    }, { bigint: () => BigInt(Math.round(host.now() * 1e6)) }),
    memoryUsage: () => ({}),
    on: () => process,
  };
  hidden("process", process);
  hidden("readline", () => host.readLine());
  if (typeof globalThis.queueMicrotask !== "function") {
    hidden("queueMicrotask", (fn) => { Promise.resolve().then(fn); });
  }
  if (typeof globalThis.performance !== "object") {
    const origin = host.now();
    hidden("performance", { now: () => host.now() - origin, timeOrigin: origin });
  }

  // --- fs (text only) and require -----------------------------------------------------------
  const fd0 = (p) => (p === 0 || p === "/dev/stdin" ? "/dev/stdin" : String(p));
  const fs = {
    readFileSync: (p) => host.readFile(fd0(p)),
    writeFileSync: (p, data) => {
      if (p === 1 || p === "/dev/stdout") return void host.write(1, String(data));
      if (p === 2 || p === "/dev/stderr") return void host.write(2, String(data));
      host.writeFile(String(p), String(data), false);
    },
    appendFileSync: (p, data) => host.writeFile(String(p), String(data), true),
    existsSync: (p) => host.exists(String(p)),
    readdirSync: (p) => host.readdir(String(p)),
  };
  hidden("__builtin_fs", fs);

  const dirname = (p) => (p.includes("/") ? p.slice(0, p.lastIndexOf("/")) || "/" : ".");
  const normalize = (p) => {
    const out = [];
    for (const part of p.split("/")) {
      if (part === "..") out.pop();
      else if (part && part !== ".") out.push(part);
    }
    return (p.startsWith("/") ? "/" : "") + out.join("/");
  };
  const cache = new Map();
  function makeRequire(from) {
    return function require(name) {
      if (name === "fs" || name === "node:fs") return fs;
      if (name === "process" || name === "node:process") return process;
      if (!name.startsWith("./") && !name.startsWith("../") && !name.startsWith("/")) {
        const e = new Error(`Cannot find module '${name}' (only fs, process and files are available)`);
        e.code = "MODULE_NOT_FOUND";
        throw e;
      }
      let path = normalize(name.startsWith("/") ? name : dirname(from) + "/" + name);
      const candidates = [path, path + ".js", path + ".json", path + "/index.js"];
      const found = candidates.find((c) => host.exists(c) && !host.exists(c + "/."));
      if (!found) throw new Error(`Cannot find module '${name}' from '${from}'`);
      if (cache.has(found)) return cache.get(found).exports;
      const module = { exports: {}, filename: found };
      cache.set(found, module);
      const text = host.readFile(found);
      if (found.endsWith(".json")) module.exports = JSON.parse(text);
      else new Function("module", "exports", "require", "__filename", "__dirname", text)(
        module, module.exports, makeRequire(found), found, dirname(found));
      return module.exports;
    };
  }
  const script = host.args[1] || "/";
  hidden("require", makeRequire(script));
  hidden("module", { exports: {}, filename: script });
  hidden("exports", globalThis.module.exports);
  hidden("__filename", script);
  hidden("__dirname", dirname(script));

  // --- timers (run by main.rs's event loop through __runTimer) ------------------------------
  let nextId = 1;
  const pending = new Map(); // id -> {at, fn, args, every}
  const add = (fn, ms, args, every) => {
    const id = nextId++;
    ms = Math.max(0, Number(ms) || 0);
    pending.set(id, { at: host.now() + ms, seq: id, fn, args, every: every ? Math.max(1, ms) : 0 });
    return id;
  };
  hidden("setTimeout", (fn, ms, ...args) => add(fn, ms, args, false));
  hidden("setInterval", (fn, ms, ...args) => add(fn, ms, args, true));
  hidden("setImmediate", (fn, ...args) => add(fn, 0, args, false));
  const clear = (id) => { pending.delete(id); };
  hidden("clearTimeout", clear);
  hidden("clearInterval", clear);
  hidden("clearImmediate", clear);
  hidden("__runTimer", () => {
    let id = null, t = null;
    for (const [k, v] of pending) if (!t || v.at < t.at || (v.at === t.at && v.seq < t.seq)) { id = k; t = v; }
    if (!t) return false;
    host.sleep(t.at - host.now());
    if (t.every) { t.at += t.every; t.seq = nextId++; } else pending.delete(id);
    t.fn(...t.args);
    return true;
  });

  // --- unhandled promise rejections end the program, as in Node -----------------------------
  const rejected = new Map();
  hidden("__onRejection", (promise, reason, handled) => {
    if (handled) rejected.delete(promise);
    else rejected.set(promise, reason);
  });
  hidden("__reportUnhandled", () => {
    for (const reason of rejected.values()) {
      host.write(2, "Uncaught (in promise) " + errorText(reason).replace(/^Uncaught /, "") + "\n");
      return true;
    }
    return false;
  });
})();
