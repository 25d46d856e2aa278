"""The pure translator: model -> mesh IR (with statuses) -> one sidecar's IR."""

from meshctl.translate.mesh import MeshIR, cluster_name, translate_mesh
from meshctl.translate.sidecar import translate_sidecar

__all__ = ["MeshIR", "cluster_name", "translate_mesh", "translate_sidecar"]
