"""``meshctl import appmesh``: golden files over App Mesh manifests in the shape of App Mesh's public examples.

tests/testdata/appmesh/<case>/input/ -> expected.yaml (what is written) and report.txt (every finding). Rewrite with
``--update-golden`` (never in CI; the run then fails so the diff gets reviewed). Every case's output must also pass
our own validation (``meshctl validate``: translated, every object healthy) and our CRD schemas, and importing twice
must give the same bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from meshctl.appmesh import convert, load_paths
from meshctl.cli.importer import render, report_text, with_gateway_api_routes
from meshctl.sources import load_manifests
from meshctl.translate import translate_mesh
from tests.apiserver import kubeconfig_for
from tests.test_manifests import crd_schemas, gateway_api_schemas

CASES = Path(__file__).parent / "testdata" / "appmesh"
ALL = sorted(p for p in CASES.iterdir() if p.is_dir())


FORMS = ["meshctl", "gateway-api"]  # --as: the routes as meshctl Routes, or as HTTPRoutes/GRPCRoutes


def run_import(case: Path, form: str = "meshctl") -> tuple[str, str]:
    docs, findings = load_paths([case / "input"])
    result = convert(docs)
    if form == "gateway-api":
        result = with_gateway_api_routes(result)
    return render(result.objects), report_text(findings + result.findings, len(result.objects))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", ALL, ids=lambda p: p.name)
def test_import_golden(case: Path, form: str, request: pytest.FixtureRequest) -> None:
    objects, report = run_import(case, form)
    suffix = "" if form == "meshctl" else f"-{form}"
    expected = {case / f"expected{suffix}.yaml": objects, case / f"report{suffix}.txt": report}
    if request.config.getoption("--update-golden") or not all(p.exists() for p in expected):
        if os.environ.get("CI"):
            pytest.fail(f"golden files are never written in CI ({case})")
        for path, text in expected.items():
            path.write_text(text)
        pytest.fail(f"wrote {case}/expected.yaml and report.txt; review the diff, then run without --update-golden")
    for path, text in expected.items():
        assert text == path.read_text(), path


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", ALL, ids=lambda p: p.name)
def test_imported_output_is_valid_meshctl(case: Path, form: str, tmp_path: Path) -> None:
    objects, _ = run_import(case, form)
    (tmp_path / "out.yaml").write_text(objects)
    mesh = translate_mesh(load_manifests(tmp_path))
    assert mesh.load_errors == ()
    # (a Gateway gets its address from its deployment, meshctl install --gateway: none yet is the one problem allowed)
    unhealthy = [
        f"{s.key}: {s.summary()}"
        for s in mesh.statuses
        if not s.healthy and any(c.reason != "AddressNotAssigned" for c in s.problems)
    ]
    assert not unhealthy, unhealthy
    schemas, upstream = crd_schemas(), gateway_api_schemas()
    for doc in yaml.safe_load_all(objects):
        if doc["kind"] in schemas:
            jsonschema.validate(doc, schemas[doc["kind"]])
        elif (doc["apiVersion"], doc["kind"]) in upstream:  # the upstream Gateway API CRDs' own schema
            jsonschema.validate(doc, upstream[(doc["apiVersion"], doc["kind"])])


@pytest.mark.parametrize("case", ALL, ids=lambda p: p.name)
def test_importing_twice_gives_identical_bytes(case: Path, tmp_path: Path) -> None:
    outputs = []
    for i in range(2):
        out = tmp_path / str(i)
        cmd = [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(case / "input"), "-o", str(out)]
        subprocess.run(cmd, capture_output=True, text=True, check=False)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert outputs[0], "nothing written"


def test_bad_input_is_reported_per_object_and_the_rest_converted(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(CASES / "bad-input" / "input")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: b-malformed.yaml: not valid YAML:" in done.stderr
    assert "unknown App Mesh kind 'VirtualWidget'" in done.stderr
    assert "VirtualNode broken/missing-node not in the input -> route not converted" in done.stderr
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout)}
    assert ("Route", "ok-route") in names and ("VirtualNode", "caller") in names


def test_strict_fails_on_any_field_not_mapped_and_set_fills_placeholders(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "meshctl", "import", "appmesh"]
    reported = str(CASES / "reported" / "input")
    assert subprocess.run([*base, "-f", reported], capture_output=True, check=False).returncode == 0
    strict = subprocess.run([*base, "-f", reported, "--strict"], capture_output=True, text=True, check=False)
    assert strict.returncode == 1 and "lossy: VirtualNode secure/frontend: spec.backendDefaults.clientPolicy.tls.validation.trust.acm" in strict.stderr
    template = tmp_path / "t.yaml"
    template.write_text((CASES / "bad-input" / "input" / "c-template.yaml").read_text())
    done = subprocess.run(
        [*base, "-f", str(template), "--set", "APP_NAME=shop"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "placeholders" not in done.stderr
    (node,) = yaml.safe_load_all(done.stdout)
    assert node["spec"]["podSelector"]["matchLabels"] == {"app": "shop"}


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(CASES / "color-app" / "input")]
    done = subprocess.run([*cmd, "-o", str(out), "--dry-run"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert f"# would write {out / 'howto-k8s.yaml'} (13 objects)" in done.stdout
    assert not out.exists()


def test_apply_is_server_side_apply_with_our_field_manager(apiserver, tmp_path: Path) -> None:
    from kubernetes import client

    from tests.test_apiserver import install_crds

    api = apiserver.client()
    install_crds(api)
    config = tmp_path / "kubeconfig"
    config.write_text(apiserver.kubeconfig())
    cmd = [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(CASES / "color-app" / "input")]
    cmd += ["--apply", "--kubeconfig", str(config)]
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, check=False)
    assert dry.returncode == 0, dry.stderr
    assert "Route howto-k8s/color-route-blue applied (dry run)" in dry.stdout
    crs = client.CustomObjectsApi(api)
    assert crs.list_namespaced_custom_object("mesh.meshctl.dev", "v1alpha1", "howto-k8s", "routes")["items"] == []
    for _ in range(2):  # applying again changes nothing
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    assert done.stdout.count(" applied\n") == 12
    assert "Service howto-k8s/color left as it is (from the input)" in done.stdout
    node = crs.get_namespaced_custom_object("mesh.meshctl.dev", "v1alpha1", "howto-k8s", "virtualnodes", "front")
    assert node["metadata"]["managedFields"][0]["manager"] == "meshctl-import"
    assert node["metadata"]["generation"] == 1
    assert node["spec"]["backends"] == [{"virtualService": {"virtualServiceRef": {"name": "color"}}}]
    # The input's own Service is not written (it would already be in a real cluster): nothing took it over.
    assert client.CoreV1Api(api).list_namespaced_service("howto-k8s").items == []
    api.close()


def test_apply_without_a_reachable_cluster_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig_for("http://127.0.0.1:1"))
    cmd = [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(CASES / "color-app" / "input")]
    done = subprocess.run([*cmd, "--apply", "--kubeconfig", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].startswith("meshctl import appmesh: --apply: cannot reach the API server")
    )
