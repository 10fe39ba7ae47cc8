"""Directories for check tests: a zip unpacked the way Lambda (or ``unzip``) would, and the
shapes SAM and CDK leave behind.

* :func:`unzip_tree` extracts a layer zip made by :func:`tests.support.layers.make_layer` into a
  directory, keeping Unix modes and symlinks (zipfile's own ``extractall`` writes a symlink as a
  small file), so ``check DIR`` and ``check ZIP`` can be compared on the same content.
* :func:`sam_build_tree` / :func:`cdk_out_tree` lay out ``.aws-sam/build/<Resource>/`` (with the
  ``template.yaml`` SAM writes next to them) and ``cdk.out/asset.<hash>/`` (with the
  ``manifest.json`` and ``cdk.out`` marker of a cloud assembly).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path


def unzip_tree(zip_path: Path, dest: Path) -> Path:
    """Extract ``zip_path`` into ``dest`` (created), modes and symlinks as recorded."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            data = zf.read(info)
            if mode and stat.S_ISLNK(mode):
                os.symlink(data.decode(), target)
                continue
            if len(data) > 1 << 20 and data == bytes(len(data)):
                with open(target, "wb") as f:  # zeros: a sparse file, like unzip on most disks
                    f.truncate(len(data))
            else:
                target.write_bytes(data)
            if mode:
                target.chmod(stat.S_IMODE(mode))
    return dest


def write_tree(
    root: Path, files: Mapping[str, bytes], modes: Mapping[str, int] | None = None
) -> Path:
    """Write ``files`` (relative path -> bytes) under ``root``."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if modes and name in modes:
            path.chmod(modes[name])
    root.mkdir(parents=True, exist_ok=True)
    return root


SAM_TEMPLATE = """AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
{resources}"""


def sam_build_tree(project: Path, resources: Mapping[str, Mapping[str, bytes]]) -> Path:
    """``project/.aws-sam/build/<Resource>/`` for each resource, as ``sam build`` leaves them."""
    build = project / ".aws-sam" / "build"
    lines = []
    for name, files in resources.items():
        write_tree(build / name, files)
        is_layer = any(n.startswith("python/") for n in files)
        kind = "AWS::Serverless::LayerVersion" if is_layer else "AWS::Serverless::Function"
        key = "ContentUri" if is_layer else "CodeUri"
        lines.append(f"  {name}:\n    Type: {kind}\n    Properties:\n      {key}: {name}\n")
    (build / "template.yaml").write_text(SAM_TEMPLATE.format(resources="".join(lines)))
    return build


def cdk_out_tree(
    project: Path, assets: Mapping[str, Mapping[str, bytes]], stack: str = "MyStack"
) -> dict[str, Path]:
    """``project/cdk.out/asset.<sha256>/`` for each named asset, and the stack's
    ``<stack>.assets.json`` listing them (``packaging: zip``) after its template (``file``),
    as ``cdk synth`` writes it; returns name -> directory."""
    out = project / "cdk.out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cdk.out").write_text('{"version":"36.0.0"}')
    (out / "manifest.json").write_text('{"version":"36.0.0","artifacts":{}}')
    template = f"{stack}.template.json"
    (out / template).write_text('{"Resources": {}}')
    files: dict[str, object] = {
        "tmpl": {"source": {"path": template, "packaging": "file"}, "destinations": {}}
    }
    dirs = {}
    for name, content in assets.items():
        digest = hashlib.sha256(name.encode()).hexdigest()
        dirs[name] = write_tree(out / f"asset.{digest}", content)
        files[digest] = {
            "source": {"path": f"asset.{digest}", "packaging": "zip"},
            "destinations": {"current_account-current_region": {"objectKey": f"{digest}.zip"}},
        }
    (out / f"{stack}.assets.json").write_text(json.dumps({"version": "36.0.0", "files": files}))
    return dirs
