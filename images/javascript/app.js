// Example workload of the build helper (`wasmedge-image build images/javascript`): the first
// argument picks what to do; every example language answers the same commands. It runs on the
// QuickJS runtime module, which offers Node's process, console and (text) fs. `slug` uses
// slugify from npm (package.json), which esbuild bundles in; built as a lone file
// (`images/javascript/app.js`), everything else works as written.
const fs = require("fs");

function fail(msg) {
  console.error(`hello-js: ${msg}`);
  process.exit(1);
}

// Each customer's order count and total, largest first, then the grand total.
function orders(path) {
  const list = JSON.parse(fs.readFileSync(path, "utf8"));
  const byName = new Map();
  let grand = 0;
  for (const { customer, qty, price } of list) {
    const s = byName.get(customer) ?? { name: customer, orders: 0, total: 0 };
    s.orders += 1;
    s.total += qty * price;
    grand += qty * price;
    byName.set(customer, s);
  }
  for (const s of [...byName.values()].sort((a, b) => b.total - a.total)) {
    console.log(`${s.name} ${s.orders} ${s.total.toFixed(2)}`);
  }
  console.log(`total ${grand.toFixed(2)}`);
}

const [cmd, ...rest] = process.argv.slice(2);
switch (cmd) {
  case undefined:
    console.log("Hello from JavaScript!");
    break;
  case "echo":
    console.log(rest.join(" "));
    break;
  case "env":
    if (!(rest[0] in process.env)) fail(`${rest[0]} is not set`);
    console.log(process.env[rest[0]]);
    break;
  case "stdin": {
    const line = readline(); // one line: `ctr run` keeps stdin open
    if (line === null) fail("no input");
    console.log(`got: ${line}`);
    break;
  }
  case "cat":
    process.stdout.write(fs.readFileSync(rest[0], "utf8"));
    break;
  case "exit":
    process.exit(Number(rest[0]));
  case "orders":
    orders(rest[0]);
    break;
  case "slug":
    console.log(require("slugify")(rest.join(" "), { lower: true, strict: true }));
    break;
  default:
    fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|orders PATH|slug WORDS...]");
}
