// Client of the wasmedge-sandbox execute API (src/sandbox/openapi.json in the repository).
// No dependencies beyond the platform's fetch; erasable TypeScript only (type stripping or esbuild).

export interface Limits {
  memory_mb?: number;
  timeout_ms?: number;
}

export interface ExecuteRequest {
  language: string;
  code: string;
  stdin?: string;
  args?: string[];
  env?: Record<string, string>;
  files?: { path: string; content: string }[];
  limits?: Limits;
}

export interface ExecuteResult {
  /** "compile": the compiler refused the code; its diagnostics are in stderr. */
  phase: "compile" | "run";
  exit_code: number;
  stdout: string;
  stderr: string;
  timed_out: boolean;
  out_of_memory: boolean;
  truncated: boolean;
  cache: "hit" | "miss";
  /** Ran in a warm slot: a container started ahead, its interpreter initialised. */
  warm: boolean;
  duration_ms: { compile: number; start: number; run: number; total: number };
  memory_peak_bytes: number;
}

export interface Language {
  name: string;
  aliases: string[];
  extension: string;
}

/** A refusal of the service: its HTTP status and stable error code. */
export class SandboxError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(`${status} ${code}: ${message}`);
    this.name = "SandboxError";
    this.status = status;
    this.code = code;
  }
}

export interface ClientOptions {
  /** e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** A bearer key of the service's --api-keys file. */
  apiKey?: string;
  /** Attempts after a 429 or 503 (default 3); each waits for Retry-After. */
  retries?: number;
  /** Upper bound of one wait, ms (default 30000). */
  maxRetryDelayMs?: number;
  fetch?: typeof fetch;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Retry-After in seconds or as an HTTP date, in ms; 1 s when absent or unreadable. */
export function retryAfterMs(value: string | null, now: number = Date.now()): number {
  if (value === null) return 1000;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && value.trim() !== "") return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? 1000 : Math.max(0, date - now);
}

export class SandboxClient {
  readonly #options: Required<Omit<ClientOptions, "apiKey">> & { apiKey?: string };

  constructor(options: ClientOptions) {
    this.#options = {
      retries: 3,
      maxRetryDelayMs: 30_000,
      fetch: globalThis.fetch.bind(globalThis),
      ...options,
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
    };
  }

  /** The seed's shape: run `code` in `language` with `input` as stdin. */
  execute(code: string, language: string, input?: string, more: Partial<ExecuteRequest> = {}): Promise<ExecuteResult> {
    return this.run({ ...more, code, language, stdin: input ?? more.stdin });
  }

  run(request: ExecuteRequest): Promise<ExecuteResult> {
    return this.#call<ExecuteResult>("POST", "/v1/execute", request);
  }

  async languages(): Promise<Language[]> {
    return (await this.#call<{ languages: Language[] }>("GET", "/v1/languages")).languages;
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.#options.apiKey) headers.authorization = `Bearer ${this.#options.apiKey}`;
    for (let attempt = 0; ; attempt++) {
      const response = await this.#options.fetch(this.#options.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.ok) return (await response.json()) as T;
      const retryable = response.status === 429 || response.status === 503;
      if (retryable && attempt < this.#options.retries) {
        await response.body?.cancel();
        await sleep(Math.min(retryAfterMs(response.headers.get("retry-after")), this.#options.maxRetryDelayMs));
        continue;
      }
      const text = await response.text();
      let code = "http_error";
      let message = text;
      try {
        const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
        code = parsed.error?.code ?? code;
        message = parsed.error?.message ?? message;
      } catch {
        // not JSON: the text as it came
      }
      throw new SandboxError(response.status, code, message);
    }
  }
}
