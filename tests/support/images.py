"""Container images for check tests, built without a daemon (OCI image spec v1.1).

An image is layers (tar files), a config (JSON: architecture, os, Env, rootfs.diff_ids) and a
manifest. :func:`write_image` writes the same layers in three shapes:

* ``docker-save`` — what ``docker save`` wrote before docker 25: ``manifest.json``,
  ``<config sha>.json``, ``<layer id>/layer.tar`` (uncompressed), ``repositories``;
* ``oci-tar`` — an OCI image layout in a tar (``oci-layout``, ``index.json``,
  ``blobs/sha256/…``; layers ``tar+gzip``), as ``docker buildx --output type=oci`` writes;
* ``oci-dir`` — the same layout as a directory (``skopeo copy … oci:DIR``).

Layer contents are ``{absolute path: bytes | (bytes, mode) | Symlink | WHITEOUT | OPAQUE}``:
``WHITEOUT`` writes ``.wh.<name>`` (delete from the layers beneath), ``OPAQUE`` writes
``<dir>/.wh..wh..opq``.

The base layer's system libraries are built by gcc (:func:`build_fake_libc`): a ``libc.so.6``
whose version script defines GLIBC_2.2.5 … up to a ceiling (2.26: an Amazon Linux 2
stand-in; 2.34: Amazon Linux 2023), in the host glibc's own order of version names, and a
``libstdc++.so.6`` defining GLIBCXX_3.4 … / CXXABI_1.3 … up to a ceiling.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from torchwheel.elf import parse_elf, version_tuple

MTIME = 1_704_067_200  # 2024-01-01


@dataclass(frozen=True)
class Symlink:
    """A symlink entry of a layer."""

    target: str


WHITEOUT = object()
OPAQUE = object()

LayerSpec = Mapping[str, object]

LAMBDA_ENV = [
    "LANG=en_US.UTF-8",
    "TZ=:/etc/localtime",
    "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
    "/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
]


def layer_tar(spec: LayerSpec) -> bytes:
    """An uncompressed layer tar: parent directories first, then the entries in path order."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:

        def add_dir(path: str) -> None:
            if path in dirs or path in ("", "/"):
                return
            add_dir(path.rsplit("/", 1)[0])
            dirs.add(path)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tf.addfile(info)

        for path, value in sorted(spec.items()):
            parent, name = path.rsplit("/", 1)
            add_dir(parent)
            if value is WHITEOUT or value is OPAQUE:
                wh = f"{parent}/.wh.{name}" if value is WHITEOUT else f"{path}/.wh..wh..opq"
                if value is OPAQUE:
                    add_dir(path)
                info = tarfile.TarInfo(wh.lstrip("/"))
                info.mtime = MTIME
                tf.addfile(info, io.BytesIO(b""))
                continue
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mtime = MTIME
            if isinstance(value, Symlink):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, value.target, 0o777
                tf.addfile(info)
                continue
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            assert isinstance(data, bytes)
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_config(diff_ids: list[str], arch: str = "amd64", env: list[str] | None = None) -> bytes:
    """The config JSON (OCI config.md) of a Lambda-like image."""
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": LAMBDA_ENV if env is None else env,
            "Entrypoint": ["/lambda-entrypoint.sh"],
            "Cmd": ["app.handler"],
            "WorkingDir": "/var/task",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "torchwheel tests"} for _ in diff_ids],
    }
    return json.dumps(config, indent=1).encode()


def _tar_of(files: Mapping[str, bytes], dest: Path) -> None:
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tf.addfile(info, io.BytesIO(data))


def write_image(
    dest: Path,
    layers: Sequence[LayerSpec],
    *,
    fmt: str = "oci-tar",
    arch: str = "amd64",
    env: list[str] | None = None,
    tag: str = "example/app:latest",
) -> Path:
    """Write the image ``layers`` (bottom first) at ``dest`` in format ``fmt``."""
    tars = [layer_tar(spec) for spec in layers]
    diff_ids = [f"sha256:{_sha(t)}" for t in tars]
    config = image_config(diff_ids, arch, env)
    files: dict[str, bytes] = {}
    if fmt == "docker-save":
        config_name = f"{_sha(config)}.json"
        files[config_name] = config
        names = []
        for t in tars:
            layer_id = _sha(t)
            files[f"{layer_id}/VERSION"] = b"1.0"
            files[f"{layer_id}/layer.tar"] = t
            names.append(f"{layer_id}/layer.tar")
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
        files["manifest.json"] = json.dumps(manifest).encode()
        repo, _, version = tag.partition(":")
        files["repositories"] = json.dumps({repo: {version: _sha(tars[-1])}}).encode()
        _tar_of(files, dest)
        return dest
    blobs: dict[str, bytes] = {}
    descs = []
    for t in tars:
        gz = gzip.compress(t, compresslevel=1, mtime=0)
        blobs[_sha(gz)] = gz
        descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": f"sha256:{_sha(gz)}",
                "size": len(gz),
            }
        )
    blobs[_sha(config)] = config
    manifest_json = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{_sha(config)}",
                "size": len(config),
            },
            "layers": descs,
        }
    ).encode()
    blobs[_sha(manifest_json)] = manifest_json
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{_sha(manifest_json)}",
                "size": len(manifest_json),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    files["index.json"] = json.dumps(index).encode()
    for digest, data in blobs.items():
        files[f"blobs/sha256/{digest}"] = data
    if fmt == "oci-tar":
        _tar_of(files, dest)
        return dest
    assert fmt == "oci-dir", fmt
    for name, data in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    return dest


# -- system libraries built by gcc ---------------------------------------------------------------


def _host_versions(lib: str, compiler: str) -> list[str]:
    path = subprocess.run(
        [compiler, f"-print-file-name={lib}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return list(parse_elf(Path(path).read_bytes(), name=path).version_defs)


def _versioned_library(
    directory: Path, soname: str, versions: list[str], out_name: str | None = None
) -> Path:
    """A shared library named ``soname`` defining exactly ``versions`` (one symbol each)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = out_name or soname
    src = directory / f"{stem}.c"
    script = directory / f"{stem}.map"
    syms = [f"tw_{i}" for i in range(len(versions))]
    src.write_text("".join(f"int {s}(void) {{ return {i}; }}\n" for i, s in enumerate(syms)))
    nodes = []
    for i, (v, s) in enumerate(zip(versions, syms, strict=True)):
        local = " local: *;" if i == 0 else ""
        parent = f" {versions[i - 1]}" if i else ""
        nodes.append(f"{v} {{ global: {s};{local} }}{parent};")
    script.write_text("\n".join(nodes) + "\n")
    out = directory / stem
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-nostdlib",
            f"-Wl,-soname,{soname}",
            f"-Wl,--version-script={script}",
            str(src),
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def _up_to(names: list[str], prefix: str, ceiling: tuple[int, ...]) -> list[str]:
    out = []
    for n in names:
        v = version_tuple(n, prefix)
        if v is not None and v <= ceiling:
            out.append(n)
    return out


def build_fake_library(
    directory: Path, soname: str, ceilings: Mapping[str, str], compiler: str = "gcc"
) -> Path:
    """``soname`` defining the host copy's versions of each prefix up to its ceiling only.

    ``build_fake_library(d, "libc.so.6", {"GLIBC_": "2.26"})``: GLIBC_2.2.5 … GLIBC_2.26, in
    the host glibc's own order (no GLIBC_2.19–2.21 on x86_64, as on the real thing).
    """
    host = _host_versions(soname, compiler)
    versions = [
        v
        for v in host
        for prefix, ceiling in ceilings.items()
        if v in _up_to([v], prefix, tuple(map(int, ceiling.split("."))))
    ]
    tag = "-".join(ceilings.values())
    return _versioned_library(directory, soname, versions, f"{soname}-{tag}")


def build_fake_libc(directory: Path, ceiling: str) -> Path:
    """``libc.so.6`` defining the host glibc's GLIBC_2.x versions up to ``ceiling`` only."""
    return build_fake_library(directory, "libc.so.6", {"GLIBC_": ceiling})


@dataclass(frozen=True)
class SystemLibs:
    """gcc-built stand-ins of an Amazon Linux image's glibc, libm, libgcc_s and libstdc++."""

    al2: dict[str, bytes]  # glibc 2.26, gcc 7 (GLIBCXX_3.4.24 / CXXABI_1.3.11), zlib 1.2.7
    al2023: dict[str, bytes]  # glibc 2.34, gcc 11 (GLIBCXX_3.4.29 / CXXABI_1.3.13), zlib 1.2.11


#: glibc's libraries besides libc.so.6 (separate files before glibc 2.34, stubs since).
GLIBC_LIBS = ("libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2")


def _system_set(
    d: Path, glibc: str, glibcxx: str, cxxabi: str, gcc: str, zlib: str
) -> dict[str, bytes]:
    glibc_libs = {
        lib: build_fake_library(d, lib, {"GLIBC_": glibc}).read_bytes() for lib in GLIBC_LIBS
    }
    return {
        "libc.so.6": build_fake_libc(d, glibc).read_bytes(),
        **glibc_libs,
        "libz.so.1": build_fake_library(d, "libz.so.1", {"ZLIB_": zlib}).read_bytes(),
        "libgcc_s.so.1": build_fake_library(d, "libgcc_s.so.1", {"GCC_": gcc}).read_bytes(),
        "libstdc++.so.6": build_fake_library(
            d, "libstdc++.so.6", {"GLIBCXX_": glibcxx, "CXXABI_": cxxabi}, "g++"
        ).read_bytes(),
    }


@pytest.fixture(scope="session")
def system_libs(tmp_path_factory: pytest.TempPathFactory) -> SystemLibs:
    """Fake system libraries (skips without gcc / g++)."""
    if shutil.which("gcc") is None or shutil.which("g++") is None:
        pytest.skip("gcc and g++ are needed to build the image's system libraries")
    d = tmp_path_factory.mktemp("syslibs")
    return SystemLibs(
        al2=_system_set(d / "al2", "2.26", "3.4.24", "1.3.11", "7.0.0", "1.2.7"),
        al2023=_system_set(d / "al2023", "2.34", "3.4.29", "1.3.13", "11.0.0", "1.2.11"),
    )


def base_layer(libs: SystemLibs, glibc: str, python: str = "3.12") -> dict[str, object]:
    """A Lambda-like base layer: /lib64 -> usr/lib64 (merged /usr, as on AL2023), glibc 2.26
    or 2.34 (libc.so.6 a symlink to the versioned file, as on AL2), libm, libgcc_s,
    libstdc++, /etc/os-release and /var/lang/bin/python3.X."""
    al2 = glibc == "2.26"
    system = libs.al2 if al2 else libs.al2023
    name = "Amazon Linux 2" if al2 else "Amazon Linux 2023"
    layer: dict[str, object] = {
        "/lib64": Symlink("usr/lib64"),
        "/etc/os-release": f'NAME="Amazon Linux"\nPRETTY_NAME="{name}"\n'.encode(),
        f"/var/lang/bin/python{python}": (b"#!/bin/sh\n", 0o755),
        "/var/lang/bin/python3": Symlink(f"python{python}"),
        "/var/runtime/bootstrap.py": b"# the runtime interface client\n",
    }
    for soname, data in system.items():
        real = f"{soname}.{glibc}" if soname != "libc.so.6" else f"libc-{glibc}.so"
        layer[f"/usr/lib64/{real}"] = (data, 0o755)
        layer[f"/usr/lib64/{soname}"] = Symlink(real)
    return layer


def wheel_layer_file(wheel: Path, dest: Path, prefix: str = "var/task/") -> Path:
    """A layer tar on disk holding ``wheel``'s members under ``prefix`` (``pip install
    --target`` of a wheel is its members as they are), streamed: for big wheels (torch)."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            ti = tarfile.TarInfo(prefix + info.filename)
            ti.size, ti.mtime = info.file_size, MTIME
            ti.mode = (info.external_attr >> 16) & 0o777 or 0o644
            with zf.open(info) as src:
                tf.addfile(ti, src)
    return dest


def docker_save_files(dest: Path, layers: list[Path], tag: str = "example/app:latest") -> Path:
    """A ``docker save`` tarball of layer tars already on disk (bottom first)."""

    def sha_file(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    digests = [sha_file(p) for p in layers]
    config = image_config([f"sha256:{d}" for d in digests])
    config_name = f"{_sha(config)}.json"
    names = [f"{d}/layer.tar" for d in digests]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(dest, "w") as tf:
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tf.addfile(info, io.BytesIO(data))
        for name, path in zip(names, layers, strict=True):
            tf.add(path, arcname=name)
    return dest


def write_image_at(
    directory: Path,
    name: str,
    layers: Sequence[LayerSpec],
    fmt: str,
    *,
    arch: str = "amd64",
    env: list[str] | None = None,
) -> Path:
    """:func:`write_image` to ``directory/name.tar`` (``directory/name/`` for ``oci-dir``)."""
    dest = directory / (name if fmt == "oci-dir" else f"{name}.tar")
    if fmt == "oci-dir":
        dest.mkdir(parents=True)
    return write_image(dest, layers, fmt=fmt, arch=arch, env=env)


def tar_header(
    name: str, size: int, typeflag: bytes = b"0", *, size_field: bytes | None = None
) -> bytes:
    """One ustar header block (``size_field`` overrides the size's octal text: base-256)."""
    block = bytearray(512)
    block[0 : len(name)] = name.encode()
    block[100:108] = b"0000644\x00"
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[156:157] = typeflag
    block[257:263] = b"ustar\x00"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)
