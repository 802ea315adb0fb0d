"""JSON schemas for kubeconform, made offline from what the package registries carry.

    k8s_schemas.py core WHEEL OUTDIR VERSION...   Kubernetes' own kinds, from the
        kubernetes-validate wheel (PyPI), which ships them as <version>-local-strict/*.json
    k8s_schemas.py crds OUTDIR CRD.yaml...        custom resources, from their CRDs

Core: the wheel's schemas carry an "$id" under https://kubernetes.io/api/ and point at their
shared definitions as "/api/_definitions.json", which kubernetes-validate resolves itself and
kubeconform would fetch from the network; so the "$id" is dropped and the references are made
relative to the file ("_definitions.json"). Nothing else changes.

CRDs: each served version's openAPIV3Schema becomes <group>/<kind>_<version>.json (the layout of
kubeconform's openapi2jsonschema.py and its "{{ .Group }}/{{ .ResourceKind }}_{{
.ResourceAPIVersion }}.json" location), made strict the same way: an object schema that lists
its properties and says nothing of others, and does not preserve unknown fields, refuses others;
"nullable" becomes a "null" type and "x-kubernetes-int-or-string" a string-or-integer.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

_PREFIX = "kubernetes_validate/kubernetes-json-schema/"


def core(wheel: Path, outdir: Path, versions: list[str]) -> int:
    """Extract the strict local schemas of these Kubernetes versions (e.g. 1.33.0)."""
    count = 0
    with zipfile.ZipFile(wheel) as archive:
        for version in versions:
            folder = f"{_PREFIX}v{version}-local-strict/"
            names = [name for name in archive.namelist() if name.startswith(folder)]
            if not names:
                raise SystemExit(f"{wheel.name} has no schemas for Kubernetes {version}")
            target = outdir / f"v{version}-local-strict"
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                if not name.endswith(".json"):
                    continue
                schema = json.loads(archive.read(name))
                # Without its "$id", a reference resolves against the file's own location.
                schema.pop("$id", None)
                text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
                (target / name[len(folder) :]).write_text(text)
                count += 1
    return count


def _strict(schema: Any) -> Any:
    """A strict copy of one schema node (walking only the keywords that hold schemas, so a
    property that happens to be called "nullable" or "properties" is left alone)."""
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    if "properties" in node:
        node["properties"] = {name: _strict(sub) for name, sub in node["properties"].items()}
    for keyword in ("items", "additionalProperties", "not"):
        if isinstance(node.get(keyword), dict):
            node[keyword] = _strict(node[keyword])
    for keyword in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(keyword), list):
            node[keyword] = [_strict(sub) for sub in node[keyword]]
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        node["additionalProperties"] = False
    return node


def crds(outdir: Path, files: list[Path]) -> int:
    """Write a strict JSON schema for each served version of each CRD in the files."""
    count = 0
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            spec = document["spec"]
            group = spec["group"]
            kind = spec["names"]["kind"].lower()
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = _strict(version["schema"]["openAPIV3Schema"])
                target = outdir / group / f"{kind}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, indent=1, sort_keys=True))
                count += 1
    return count


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "core":
        written = core(Path(argv[1]), Path(argv[2]), argv[3:])
    elif len(argv) >= 3 and argv[0] == "crds":
        written = crds(Path(argv[1]), [Path(name) for name in argv[2:]])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{argv[0]}: {written} schemas written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
