"""KServe's published InferenceService CRD is controller-gen's output edited afterwards; redo those edits.

KServe's ``make manifests`` (v0.20.0) runs controller-gen over ``pkg/apis/serving/...`` and then, before it
publishes the CRD, deletes schema parts with yq: the ``required`` lists one level under each component (so
that the framework's embedded container ``name`` is optional: ``spec.predictor.model.name`` would otherwise
be required), ``ephemeralContainers`` (size), the ``port`` requirement of httpGet/tcpSocket probes (Knative
sets it), and adds ``default: TCP`` to every ``protocol``. Without these, a real API server rejects valid
InferenceServices that KServe accepts. This script applies the same edits to controller-gen's output, and
compares the result with the CRD file that the same KServe module ships, so that a release whose edits
changed is noticed instead of silently checked against the wrong schema.

Standard library only (JSON in and out: run.sh converts YAML with kubectl).

    python3 kserve_crd.py fixup GENERATED.json OUT.json
    python3 kserve_crd.py compare OUT.json SHIPPED.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

JSON = dict[str, Any]
PROBES = ("livenessProbe", "readinessProbe")


def _spec_schema(crd: JSON) -> JSON:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1, f"expected one version (v1beta1), got {[v['name'] for v in versions]}"
    return dict(versions[0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def _maps(node: Any) -> Iterator[JSON]:
    """Every mapping in ``node``, itself included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _maps(value)
    elif isinstance(node, list):
        for value in node:
            yield from _maps(value)


def fixup(crd: JSON) -> JSON:
    spec = _spec_schema(crd)
    for component in spec["properties"].values():  # predictor, transformer, explainer
        fields = component.get("properties", {})
        fields.pop("ephemeralContainers", None)
        for field in fields.values():
            field.pop("required", None)
            for probe in PROBES:
                handlers = field.get("properties", {}).get(probe, {}).get("properties", {})
                for handler in ("httpGet", "tcpSocket"):
                    handlers.get(handler, {}).pop("required", None)
        container = fields.get("containers", {}).get("items", {}).get("properties", {})
        for probe in PROBES:
            container.get(probe, {}).get("properties", {}).get("httpGet", {}).pop("required", None)
    for node in _maps(spec):
        protocol = node.get("protocol")
        if isinstance(protocol, dict):
            protocol["default"] = "TCP"
    return crd


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    if type(a) is not type(b):
        yield f"{path}: {type(a).__name__} vs {type(b).__name__}"
    elif isinstance(a, dict):
        for key in sorted(set(a) | set(b)):
            if key not in b:
                yield f"{path}.{key}: only in the generated CRD"
            elif key not in a:
                yield f"{path}.{key}: only in the shipped CRD"
            else:
                yield from differences(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} vs {len(b)} items"
        else:
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {a!r} vs {b!r}"


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "fixup":
        with open(argv[2]) as f:
            crd = json.load(f)
        with open(argv[3], "w") as f:
            json.dump(fixup(crd), f)
        return 0
    if len(argv) == 4 and argv[1] == "compare":
        with open(argv[2]) as f:
            generated = json.load(f)["spec"]
        with open(argv[3]) as f:
            shipped = json.load(f)["spec"]
        diffs = list(differences(generated, shipped, ".spec"))
        for d in diffs[:20]:
            print(f"  differs: {d}")
        if diffs:
            print(f"kserve_crd: the generated CRD differs from the shipped one in {len(diffs)} places", file=sys.stderr)
            return 1
        print("  the generated CRD's spec equals the one the KServe module ships")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
