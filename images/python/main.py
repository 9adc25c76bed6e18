"""Example workload of the build helper (`wasmedge-image build images/python`): the first
argument picks what to do; every example language answers the same commands."""
import os
import sys

from tabulate import tabulate

from orders import summarize


def fail(msg):
    print(f"hello-python: {msg}", file=sys.stderr)
    sys.exit(1)


def main(args):
    if not args:
        print("Hello from Python!")
    elif args[0] == "echo":
        print(" ".join(args[1:]))
    elif args[0] == "env" and len(args) == 2:
        if args[1] not in os.environ:
            fail(f"{args[1]} is not set")
        print(os.environ[args[1]])
    elif args[0] == "stdin":
        line = sys.stdin.readline()  # one line: `ctr run` keeps stdin open
        if not line:
            fail("no input")
        print("got: " + line.rstrip("\r\n"))
    elif args[0] == "cat" and len(args) == 2:
        with open(args[1], encoding="utf-8") as f:
            sys.stdout.write(f.read())
    elif args[0] == "exit" and len(args) == 2:
        sys.exit(int(args[1]))
    elif args[0] == "orders" and len(args) == 2:
        customers, total = summarize(args[1])
        for c in customers:
            print(f"{c.name} {c.orders} {c.total:.2f}")
        print(f"total {total:.2f}")
    elif args[0] == "table" and len(args) == 2:
        # The dependency from PyPI (requirements.txt): the summary as a table.
        customers, total = summarize(args[1])
        rows = [(c.name, c.orders, f"{c.total:.2f}") for c in customers]
        print(tabulate(rows, headers=["customer", "orders", "total"], colalign=("left", "right", "right"), disable_numparse=True))
    else:
        fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|orders PATH|table PATH]")


if __name__ == "__main__":
    main(sys.argv[1:])
