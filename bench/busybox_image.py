#!/usr/bin/env python3
"""Write a one-file Linux OCI image, a static busybox at /bin/busybox, as an OCI-layout tarball that
`ctr image import` takes. No registry is needed. Deterministic: the same busybox gives the same digests.

Usage: busybox_image.py TAG OUT.tar [BUSYBOX]   (BUSYBOX defaults to /bin/busybox)
"""
import gzip
import hashlib
import io
import json
import platform
import sys
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(entries) -> bytes:
    """A tar of (TarInfo, bytes or None) with fixed owners and times."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def layer(busybox: bytes) -> bytes:
    """The uncompressed layer: /bin and /bin/busybox."""
    bin_dir = tarfile.TarInfo("bin")
    bin_dir.type, bin_dir.mode = tarfile.DIRTYPE, 0o755
    exe = tarfile.TarInfo("bin/busybox")
    exe.mode, exe.size = 0o755, len(busybox)
    return tar_bytes([(bin_dir, None), (exe, busybox)])


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image_tar(tag: str, busybox: bytes) -> bytes:
    diff = layer(busybox)
    gz = gzip.compress(diff, mtime=0)
    config = json.dumps({
        "architecture": ARCH,
        "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "echo", "hello from busybox"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(diff)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", gz)],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor(
            "application/vnd.oci.image.manifest.v1+json", manifest,
            platform={"architecture": ARCH, "os": "linux"},
            annotations={"io.containerd.image.name": tag, "org.opencontainers.image.ref.name": tag},
        )],
    }, sort_keys=True).encode()

    entries = []
    blobs = tarfile.TarInfo("blobs/sha256")
    blobs.type, blobs.mode = tarfile.DIRTYPE, 0o755
    entries.append((blobs, None))
    for data in (config, gz, manifest):
        info = tarfile.TarInfo("blobs/sha256/" + hashlib.sha256(data).hexdigest())
        info.mode, info.size = 0o644, len(data)
        entries.append((info, data))
    for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
        info = tarfile.TarInfo(name)
        info.mode, info.size = 0o644, len(data)
        entries.append((info, data))
    return tar_bytes(entries)


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[-1])
    tag, out = sys.argv[1], sys.argv[2]
    with open(sys.argv[3] if len(sys.argv) == 4 else "/bin/busybox", "rb") as f:
        busybox = f.read()
    with open(out, "wb") as f:
        f.write(image_tar(tag, busybox))


if __name__ == "__main__":
    main()
