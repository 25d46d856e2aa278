"""The pure translator: model -> mesh IR (with statuses) -> one sidecar's IR."""

from meshctl.xds.translate.mesh import MeshIR, cluster_name, translate_mesh
from meshctl.xds.translate.sidecar import translate_sidecar

__all__ = ["MeshIR", "cluster_name", "translate_mesh", "translate_sidecar"]
