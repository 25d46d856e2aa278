"""Loading cluster credentials the way kubectl does, for every command that talks to the Kubernetes API."""

from __future__ import annotations

from kubernetes import client, config

from meshctl.version import CLI_USER_AGENT

__all__ = ["api_client"]


def api_client(
    kubeconfig: str | None, *, in_cluster: bool = True, user_agent: str = CLI_USER_AGENT
) -> client.ApiClient:
    """``kubeconfig`` if given; else the in-cluster service account (when ``in_cluster``); else ~/.kube/config.
    Raises ``config.ConfigException`` or ``OSError`` when there is no usable configuration."""
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    elif in_cluster:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    else:
        config.load_kube_config()
    api = client.ApiClient()
    api.user_agent = user_agent
    return api
