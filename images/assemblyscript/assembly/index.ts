// Example workload of the build helper (`wasmedge-image build images/assemblyscript`): the first
// argument picks what to do; every example language answers the same commands. It runs on the
// WASI shim (@assemblyscript/wasi-shim), which gives `process` and `console`; the file read
// goes through the WASI bindings directly, as the shim has no `fs`.
import {
  errno,
  fd,
  fd_close,
  fd_prestat_dir_name,
  fd_prestat_get,
  fd_read,
  lookupflags,
  path_open,
  prestat,
  rights,
} from "bindings/wasi_snapshot_preview1";

function fail(msg: string): void {
  process.stderr.write(`hello-assemblyscript: ${msg}\n`);
  process.exit(1);
}

function print(line: string): void {
  process.stdout.write(line + "\n");
}

/** Reads `fd` to its end (or, with `untilNewline`, to the first newline) as UTF-8. */
function readAll(from: fd, untilNewline: bool = false): string {
  const chunks = new Array<ArrayBuffer>();
  let total = 0;
  const buf = new ArrayBuffer(4096);
  const iov = new ArrayBuffer(8);
  const nread = new ArrayBuffer(4);
  while (true) {
    store<u32>(changetype<usize>(iov), changetype<usize>(buf));
    store<u32>(changetype<usize>(iov), buf.byteLength, 4);
    const err = fd_read(from, changetype<usize>(iov), 1, changetype<usize>(nread));
    if (err != errno.SUCCESS) fail(`read failed: errno ${err}`);
    const n = load<u32>(changetype<usize>(nread));
    if (n == 0) break;
    chunks.push(buf.slice(0, n));
    total += n;
    if (untilNewline && load<u8>(changetype<usize>(buf) + n - 1) == 10) break;
  }
  const all = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < chunks.length; i++) {
    all.set(Uint8Array.wrap(chunks[i]), at);
    at += chunks[i].byteLength;
  }
  return String.UTF8.decode(all.buffer);
}

/** The preopened directory whose name starts `path`, and the rest of `path`. */
function preopenOf(path: string): string[] {
  const stat = new ArrayBuffer(8);
  for (let dir: u32 = 3; ; dir++) {
    if (fd_prestat_get(dir, changetype<prestat>(changetype<usize>(stat))) != errno.SUCCESS) break;
    const len = load<u32>(changetype<usize>(stat), 4);
    const name = new ArrayBuffer(len);
    fd_prestat_dir_name(dir, changetype<usize>(name), len);
    let prefix = String.UTF8.decode(name);
    if (!prefix.endsWith("/")) prefix += "/";
    if (path.startsWith(prefix)) return [dir.toString(), path.slice(prefix.length)];
  }
  fail(`${path}: no preopened directory holds it`);
  return [];
}

function readFile(path: string): string {
  const where = preopenOf(path);
  const rel = String.UTF8.encode(where[1]);
  const opened = new ArrayBuffer(4);
  const err = path_open(
    <fd>U32.parseInt(where[0]),
    lookupflags.SYMLINK_FOLLOW,
    changetype<usize>(rel),
    rel.byteLength,
    0,
    rights.FD_READ,
    0,
    0,
    changetype<usize>(opened),
  );
  if (err != errno.SUCCESS) fail(`${path}: cannot open (errno ${err})`);
  const file = load<u32>(changetype<usize>(opened));
  const text = readAll(file);
  fd_close(file);
  return text;
}

/** The primes below `limit` by the sieve of Eratosthenes: how many, and the largest. */
function primes(limit: i32): string {
  const composite = new Uint8Array(limit);
  let count = 0;
  let largest = 0;
  for (let i = 2; i < limit; i++) {
    if (composite[i]) continue;
    count++;
    largest = i;
    for (let j = <i64>i * i; j < limit; j += i) composite[<i32>j] = 1;
  }
  return `${count} primes below ${limit}, the largest is ${largest}`;
}

const args = process.argv.slice(1); // WASI argv: the program, then its arguments
if (args.length == 0) {
  print("Hello from AssemblyScript!");
} else if (args[0] == "echo") {
  print(args.slice(1).join(" "));
} else if (args[0] == "env" && args.length == 2) {
  if (!process.env.has(args[1])) fail(`${args[1]} is not set`);
  print(process.env.get(args[1]));
} else if (args[0] == "stdin") {
  const line = readAll(0, true); // one line: `ctr run` keeps stdin open
  if (line.length == 0) fail("no input");
  print("got: " + line.replace("\r", "").replace("\n", ""));
} else if (args[0] == "cat" && args.length == 2) {
  process.stdout.write(readFile(args[1]));
} else if (args[0] == "exit" && args.length == 2) {
  process.exit(I32.parseInt(args[1]));
} else if (args[0] == "primes" && args.length == 2) {
  print(primes(I32.parseInt(args[1])));
} else {
  fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|primes N]");
}
