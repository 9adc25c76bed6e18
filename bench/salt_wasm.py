#!/usr/bin/env python3
"""Copy a wasm module with a custom section holding a random nonce appended: same code, new digest.
`make bench` gives the primes image a fresh module each run, so its first run through the shim is a
true AOT cache miss and the runs after it are hits, whatever earlier runs left in the cache.

Usage: salt_wasm.py IN.wasm OUT.wasm
"""
import os
import sys


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def custom_section(name: bytes, payload: bytes) -> bytes:
    body = leb128(len(name)) + name + payload
    return b"\x00" + leb128(len(body)) + body


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    with open(sys.argv[1], "rb") as f:
        module = f.read()
    if module[:4] != b"\0asm":
        sys.exit(f"{sys.argv[1]} is not a wasm module")
    with open(sys.argv[2], "wb") as f:
        f.write(module + custom_section(b"bench-nonce", os.urandom(16)))


if __name__ == "__main__":
    main()
