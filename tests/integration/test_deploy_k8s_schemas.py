"""Every object the overlays and examples render validates, strictly, against the Kubernetes API schemas.

kubernetes-validate checks each built-in object against the OpenAPI schemas of a Kubernetes release, which
ship inside its wheel (nothing is fetched): strict mode rejects a field the schema does not have, so a typo
(``livenessprobe``) or a field newer than the oldest supported release fails here instead of at
``kubectl apply``. Validated against Kubernetes 1.30, the oldest release the manifests support (the ingest's
preStop ``sleep`` action), and against the newest release the package bundles.

The custom resources (Strimzi's ``Kafka``, ``KafkaNodePool``, ``KafkaTopic``, KServe's ``InferenceService``)
have no bundled schema; a real API server with their CRDs checks them: ``make k8s-check``
(``deploy/k8s-check/run.sh``), which is too slow for ``make test`` on a fresh machine. Any other kind
without a schema fails here, so a new kind cannot slip through unchecked.

Rendering uses the kustomize of ``test_deploy_k8s`` (cached after its first build).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

from tests.integration.test_deploy_k8s import K8S, OVERLAYS, kustomize, render  # noqa: F401 (kustomize: fixture)

pytestmark = pytest.mark.integration

TARGETS = [K8S / "overlays" / o for o in OVERLAYS] + [K8S / "examples" / "kserve"]
OLDEST_SUPPORTED = "1.30"
KUBE_VERSIONS = (OLDEST_SUPPORTED, kv.major_minor(kv.latest_version()))
# Checked by `make k8s-check` against CRDs generated from Strimzi's and KServe's published artifacts.
CUSTOM_RESOURCES = {
    ("kafka.strimzi.io/v1", "Kafka"),
    ("kafka.strimzi.io/v1", "KafkaNodePool"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
}
Rendered = dict[str, list[dict[str, Any]]]  # target (relative to deploy/k8s) -> its objects


def schema_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Why ``obj`` does not validate strictly against Kubernetes ``version`` (empty: it does)."""
    name = f"{obj['kind']}/{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
    try:
        kv.validate(obj, version, strict=True)
    except kv.SchemaNotFoundError as exc:
        return [f"{name}: {exc.message}"]
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top)"
        return [f"{name}: {where}: {exc.message}"]
    return []


@pytest.fixture(scope="module")
def rendered(kustomize: list[str]) -> Rendered:  # noqa: F811 (the fixture above)
    return {str(t.relative_to(K8S)): render(kustomize, t) for t in TARGETS}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("target", [str(t.relative_to(K8S)) for t in TARGETS])
def test_rendered_objects_validate_strictly(rendered: Rendered, target: str, version: str) -> None:
    objects = rendered[target]
    builtin = [o for o in objects if (o["apiVersion"], o["kind"]) not in CUSTOM_RESOURCES]
    assert builtin, f"{target}: no built-in objects rendered"
    errors = [e for o in builtin for e in schema_errors(o, version)]
    assert not errors, f"{target} against Kubernetes {version}:\n" + "\n".join(errors)


def test_custom_resources_are_only_the_known_ones(rendered: Rendered) -> None:
    """The CRD kinds skipped above are exactly the ones rendered, so the skip list cannot go stale."""
    seen = {(o["apiVersion"], o["kind"]) for objs in rendered.values() for o in objs}
    assert seen & CUSTOM_RESOURCES == CUSTOM_RESOURCES


def test_strict_validation_rejects_an_unknown_field_and_a_wrong_type(rendered: Rendered) -> None:
    """The validator really is strict: one typo and one wrong type in the ingest StatefulSet each fail it."""
    ingest = next(
        o for o in rendered["overlays/dev"] if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "inferlog-ingest"
    )
    assert schema_errors(ingest, OLDEST_SUPPORTED) == []

    typo = copy.deepcopy(ingest)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["livenessprobe"] = container.pop("livenessProbe")
    [error] = schema_errors(typo, OLDEST_SUPPORTED)
    assert "livenessprobe" in error

    wrong_type = copy.deepcopy(ingest)
    wrong_type["spec"]["replicas"] = "3"
    [error] = schema_errors(wrong_type, OLDEST_SUPPORTED)
    assert "spec.replicas" in error
