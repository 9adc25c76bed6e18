// The client against the real service: `test/e2e_sandbox.rs` starts one (with key "k1", one
// request in 20 s and a burst of one) and runs `node --test` with SANDBOX_URL and SANDBOX_KEY.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SandboxClient, SandboxError, retryAfterMs } from "../src/index.ts";

const baseUrl = process.env.SANDBOX_URL;
const apiKey = process.env.SANDBOX_KEY;
const live = { skip: baseUrl ? false : "SANDBOX_URL is not set" };

/** fetch that counts the calls and their statuses. */
function counting() {
  const statuses: number[] = [];
  const wrapped: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    statuses.push(response.status);
    return response;
  };
  return { statuses, fetch: wrapped };
}

test("Retry-After in seconds, as a date, or absent", () => {
  assert.equal(retryAfterMs("2"), 2000);
  assert.equal(retryAfterMs(null), 1000);
  assert.equal(retryAfterMs(new Date(10_000).toUTCString(), 5_000), 5000);
  assert.equal(retryAfterMs("soon"), 1000);
});

test("execute(code, language, input) gives a typed result; a 429 is retried after Retry-After", live, async () => {
  const { statuses, fetch } = counting();
  const client = new SandboxClient({ baseUrl: baseUrl!, apiKey, fetch });
  const first = await client.execute("import sys\nprint(sys.stdin.read()[::-1])", "python", "olleh");
  assert.equal(first.phase, "run");
  assert.equal(first.exit_code, 0);
  assert.equal(first.stdout, "hello\n");
  assert.equal(first.timed_out, false);
  // The key's bucket holds one token: the next call is refused once, then let through.
  const second = await client.execute("console.log(6 * 7)", "javascript");
  assert.equal(second.stdout, "42\n");
  assert.deepEqual(statuses, [200, 429, 200]);
});

test("refusals are SandboxErrors with the service's code; without retries a 429 is one", live, async () => {
  const wrongKey = new SandboxClient({ baseUrl: baseUrl!, apiKey: "wrong" });
  await assert.rejects(wrongKey.execute("print(1)", "python"), (e: unknown) => e instanceof SandboxError && e.status === 401 && e.code === "unauthorized");
  const patient = new SandboxClient({ baseUrl: baseUrl!, apiKey });
  await assert.rejects(patient.execute("print(1)", "cobol"), (e: unknown) => e instanceof SandboxError && e.status === 400 && /known languages: /.test(e.message));
  // That took the only token: at once, the next call is refused, and not retried.
  const impatient = new SandboxClient({ baseUrl: baseUrl!, apiKey, retries: 0 });
  await assert.rejects(impatient.execute("print(1)", "python"), (e: unknown) => e instanceof SandboxError && e.status === 429 && e.code === "rate_limited");
});

test("languages lists what the service builds", live, async () => {
  const client = new SandboxClient({ baseUrl: baseUrl!, apiKey });
  const names = (await client.languages()).map((l) => l.name);
  assert.ok(names.includes("python") && names.includes("javascript"), names.join(", "));
});
