"""The CLI's credentials for an admin API that asks for them (serve --admin-auth=kubernetes): MESHCTL_TOKEN, else
the kubeconfig's current user's token or token file, as kubectl reads them."""

from __future__ import annotations

from pathlib import Path

import yaml

from meshctl.cli.client import bearer_token


def _kubeconfig(path: Path, user: dict) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "dev",
                "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "me"}}, {"name": "x", "context": {}}],
                "users": [{"name": "other", "user": {"token": "nope"}}, {"name": "me", "user": user}],
                "clusters": [{"name": "c", "cluster": {"server": "https://example.invalid"}}],
            }
        )
    )


def test_the_token_comes_from_the_environment_then_the_kubeconfig(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "config"
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("MESHCTL_TOKEN", raising=False)
    assert bearer_token() is None  # no file
    _kubeconfig(config, {"token": "abc\n"})
    assert bearer_token() == "abc"
    (tmp_path / "token").write_text("from-file\n")
    _kubeconfig(config, {"tokenFile": str(tmp_path / "token")})
    assert bearer_token() == "from-file"
    _kubeconfig(config, {"client-certificate": "/x"})
    assert bearer_token() is None  # certificates are not sent here
    config.write_text("{not: [yaml")
    assert bearer_token() is None
    monkeypatch.setenv("MESHCTL_TOKEN", "env")
    assert bearer_token() == "env"
