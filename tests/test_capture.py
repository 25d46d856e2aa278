"""The capture rules as text (what ``meshctl capture`` restores) and its input checks. The rules are applied for
real, with Envoy and traffic, in tests/e2e/test_capture.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from meshctl.inject.capture import CaptureConfig, CaptureError, capture_rules, jump_rules, parse_ports


def test_rules_redirect_app_ports_in_and_everything_but_the_proxy_out() -> None:
    config = CaptureConfig(app_ports=(8080, 9090), ignored_cidrs=("169.254.169.254",), ignored_ports=(22, 2049))
    assert capture_rules(config).splitlines() == [
        "*nat",
        ":MESHCTL_INBOUND - [0:0]",
        ":MESHCTL_OUTPUT - [0:0]",
        "-A MESHCTL_INBOUND -p tcp -m multiport --dports 8080,9090 -j REDIRECT --to-ports 15000",
        "-A MESHCTL_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A MESHCTL_OUTPUT -d 169.254.169.254/32 -j RETURN",
        "-A MESHCTL_OUTPUT -p tcp -m multiport --dports 22,2049 -j RETURN",
        "-A MESHCTL_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        "-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j MESHCTL_INBOUND",
        "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j MESHCTL_OUTPUT",
        "COMMIT",
    ]


def test_jumps_already_present_are_not_added_again_and_no_app_ports_means_no_inbound_jump() -> None:
    config = CaptureConfig(app_ports=(8080,))
    again = capture_rules(config, present=["-P OUTPUT ACCEPT", *(r.replace(" ", "  ") for r in jump_rules(config))])
    assert "-A PREROUTING" not in again and "-A OUTPUT" not in again
    assert "-A PREROUTING" not in capture_rules(CaptureConfig())


def test_more_than_fifteen_ports_are_split_across_multiport_rules() -> None:
    rules = capture_rules(CaptureConfig(app_ports=tuple(range(8000, 8020))))
    inbound = [line for line in rules.splitlines() if line.startswith("-A MESHCTL_INBOUND")]
    assert len(inbound) == 2 and "8014 " in inbound[0] + " " and inbound[1].split()[7] == "8015,8016,8017,8018,8019"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"app_ports": (15001,)}, "loop"),
        ({"app_ports": (0,)}, "outside"),
        ({"ignored_cidrs": ("10.0.0.0/33",)}, "not an address"),
        ({"ignored_cidrs": ("fd00::/8",)}, "IPv6"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs, message) -> None:
    with pytest.raises(CaptureError, match=message):
        CaptureConfig(**kwargs)


def test_cli_prints_rules_on_dry_run_and_one_line_on_bad_input() -> None:
    run = [sys.executable, "-m", "meshctl", "capture", "--dry-run"]
    done = subprocess.run(
        [*run, "--app-ports", "8080", "--ignored-cidrs", "10.1.0.0/16"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "-d 10.1.0.0/16 -j RETURN" in done.stdout
    bad = subprocess.run([*run, "--app-ports", "80,http"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "meshctl capture: port 'http' is not a number"
    assert parse_ports("80, 80,443,") == (80, 443)
