// Example workload of the build helper (`wasmedge-image build images/typescript`): the first
// argument picks what to do; every example language answers the same commands. esbuild strips
// the types and bundles the modules; the result runs on the QuickJS runtime module.
import { readFileSync } from "fs";
import ms from "ms";
import { summarize } from "./orders";

declare function readline(): string | null; // offered by the runtime: one line of stdin

function fail(msg: string): never {
  console.error(`hello-ts: ${msg}`);
  process.exit(1);
}

const [cmd, ...rest]: (string | undefined)[] = process.argv.slice(2);
switch (cmd) {
  case undefined:
    console.log("Hello from TypeScript!");
    break;
  case "echo":
    console.log(rest.join(" "));
    break;
  case "env": {
    const value = process.env[rest[0]!];
    if (value === undefined) fail(`${rest[0]} is not set`);
    console.log(value);
    break;
  }
  case "stdin": {
    const line = readline();
    if (line === null) fail("no input");
    console.log(`got: ${line}`);
    break;
  }
  case "cat":
    process.stdout.write(readFileSync(rest[0]!, "utf8"));
    break;
  case "exit":
    process.exit(Number(rest[0]));
  case "orders": {
    const { customers, total } = summarize(rest[0]!);
    for (const c of customers) console.log(`${c.name} ${c.orders} ${c.total.toFixed(2)}`);
    console.log(`total ${total.toFixed(2)}`);
    break;
  }
  case "ms": // the dependency from npm: "1.5h" -> 5400000, 90000 -> "2m"
    console.log(/^\d+$/.test(rest[0]!) ? ms(Number(rest[0])) : String(ms(rest[0]! as any)));
    break;
  default:
    fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|orders PATH|ms DURATION]");
}
