"""Every subcommand turns bad input into one line on stderr and exit code 2 (1 where documented), never a
traceback (issue 27, part 4). Runs the installed command as a user would."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

MESHCTL = [sys.executable, "-m", "meshctl"]
DEAD = "http://127.0.0.1:1"  # nothing listens on port 1
KUBECTL_LIST = "apiVersion: v1\nkind: List\nitems: []\nmetadata:\n  creationTimestamp: 2026-12-01T10:00:00Z\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    (root / "not-text.yaml").write_bytes(b"kind: Service\nmetadata: {name: \xff}\n")
    (root / "kubectl-get.yaml").write_text(KUBECTL_LIST)
    (root / "empty").mkdir()
    return {
        "not_text": str(root / "not-text.yaml"),
        "kubectl_get": str(root / "kubectl-get.yaml"),
        "empty": str(root / "empty"),
        "root": str(root),
    }


@pytest.fixture(scope="module")
def busy_port() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield str(s.getsockname()[1])


# (argv with {placeholders}, exit code, a piece of the one line said)
CASES = [
    (["serve", "--manifests", "/missing"], 2, "not a directory"),
    (["serve", "--kubernetes", "--kubeconfig", "/missing"], 2, "cannot load a Kubernetes configuration"),
    (["serve", "--manifests", "{empty}", "--xds-port", "{busy}"], 2, "xDS: cannot listen on 127.0.0.1:"),
    (["serve", "--manifests", "{empty}", "--xds-port", "0", "--admin-port", "{busy}"], 2, "cannot listen"),
    (["bootstrap", "--node-id", "a/b/c", "--statsd-address", "statsd.local"], 2, "expected host:port"),
    (["bootstrap", "--node-id", "a/b/c", "--xds-ca", "/missing"], 2, "--xds-ca /missing"),
    (["validate", "/missing-dir"], 2, "no such file or directory"),
    (["get", "proxies", "--admin", "127.0.0.1:1"], 2, "cannot reach the control plane at http://127.0.0.1:1"),
    (["get", "proxies", "--admin", "ftp://x"], 2, "expected a URL like"),
    (["get", "status", "--admin", DEAD], 2, "cannot reach the control plane"),
    (["get", "rejections", "--admin", DEAD], 2, "cannot reach the control plane"),
    (["get", "routes", "reviews", "--admin", DEAD], 2, "cannot reach the control plane"),
    (["get", "ingresses", "--admin", DEAD], 2, "cannot reach the control plane"),
    (["status", "--admin", DEAD], 2, "cannot reach the control plane"),
    (["config-dump", "--admin", DEAD], 2, "cannot reach the control plane"),
    (["explain", "GET", "http://[::1", "--admin", DEAD], 2, "is not a URL: Invalid IPv6 URL"),
    (["shift", "reviews", "--to", "a=50", "--admin", DEAD], 2, "weights sum to 50"),
    (["shift", "reviews", "--to", "a", "--admin", DEAD], 2, "expected NODE=WEIGHT"),
    (["diff", "-f", "/missing", "--admin", DEAD], 2, "no such file or directory"),
    (["diff", "-f", "{not_text}", "--admin", DEAD], 2, "cannot read"),
    (["diff", "-f", "{kubectl_get}", "--admin", DEAD], 2, "cannot reach the control plane"),  # read fine
    (["import", "appmesh", "-f", "{empty}", "-o", "/proc/meshctl"], 2, "cannot write the report"),
    (["capture", "--app-ports", "abc", "--dry-run"], 2, "is not a number"),
    (["capture", "--app-ports", "70000", "--dry-run"], 2, "outside 1-65535"),
    (["install", "--replicas", "-1"], 2, "--replicas must be at least 1"),
    (["install", "--namespace", "Bad_NS"], 2, "not a namespace name"),
]


@pytest.mark.parametrize(("argv", "code", "said"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_is_one_line_and_an_exit_code(argv, code, said, files, busy_port) -> None:
    args = [a.format(**files, busy=busy_port) for a in argv]
    result = subprocess.run([*MESHCTL, *args], capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # `import appmesh` prints its report (a summary line) before the error: the error is still one line.
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert said in lines[-1], lines
    assert lines[-1].startswith("meshctl"), lines
    if argv[0] != "import":
        assert len(lines) == 1, lines


def test_validate_of_a_broken_directory_names_each_problem_and_exits_1(files) -> None:
    result = subprocess.run([*MESHCTL, "validate", files["root"]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: not-text.yaml: cannot read:" in result.stdout


def test_argument_errors_are_argparse_usage_and_exit_2() -> None:
    result = subprocess.run([*MESHCTL, "demo", "--duration", "abc"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid float value: 'abc'" in result.stderr
