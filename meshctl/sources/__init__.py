"""Sources turn the outside world (a manifest directory, a Kubernetes cluster) into ``Model`` snapshots."""

from meshctl.sources.base import ModelSink, Source, build_model
from meshctl.sources.manifests import ManifestSource, load_manifests

# The Kubernetes source (meshctl.sources.kubernetes) is imported where used: it loads the kubernetes client.
__all__ = ["ManifestSource", "ModelSink", "Source", "build_model", "load_manifests"]
