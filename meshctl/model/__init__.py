"""The model: one immutable snapshot of everything the sources know, the only thing translation reads.

``meta``: identity and metadata every object shares; ``mesh``: Services, EndpointSlices, Pods, VirtualNodes,
Routes and the ``Model`` holding them; ``ingress``: the objects only the ingress reconciler reads;
``namespaced``: the per-namespace persistent maps a large model keeps its Pods in.
Import the mesh objects from here: ``from meshctl.model import Model, ObjectKey``.
"""

from meshctl.model import mesh
from meshctl.model.mesh import *  # noqa: F403 - the mesh objects are the package's face

__all__ = list(mesh.__all__)
