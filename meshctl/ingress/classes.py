"""Which Ingresses are ours, decided as the AWS Load Balancer Controller decides it (``classifyIngress``), so that
its users' manifests move over unchanged:

1. The legacy annotation ``kubernetes.io/ingress.class`` wins: ours when it equals ``--ingress-class`` (default
   ``alb``, LBC's default; ``alb`` too when the flag is empty); any other value is another controller's.
2. Else ``spec.ingressClassName``: ours when that IngressClass's ``spec.controller`` is ours
   (``meshctl.dev/ingress``) or LBC's (``ingress.k8s.aws/alb``). The class's name does not matter.
3. Else the cluster's default IngressClass (annotated ``ingressclass.kubernetes.io/is-default-class: "true"``)
   decides the same way; two defaults are an error, as in LBC.
4. An Ingress with no class at all is ours only when ``--ingress-class`` is empty.

Taking over from LBC: stop LBC first (two controllers on one Ingress fight over its load balancer, LBC #2185).
"""

from __future__ import annotations

from collections.abc import Iterable

from meshctl.model.ingress import Ingress, IngressClass

__all__ = [
    "CLASS_ANNOTATION",
    "DEFAULT_CLASS_ANNOTATION",
    "DEFAULT_INGRESS_CLASS",
    "INGRESS_CONTROLLER",
    "LBC_CONTROLLER",
    "Verdict",
    "classify",
]

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
DEFAULT_INGRESS_CLASS = "alb"
INGRESS_CONTROLLER = "meshctl.dev/ingress"
LBC_CONTROLLER = "ingress.k8s.aws/alb"
_OURS = frozenset({INGRESS_CONTROLLER, LBC_CONTROLLER})


class Verdict:
    """Ours or not, and why not when the user would want to know (an error on the Ingress)."""

    __slots__ = ("error", "ours")

    def __init__(self, ours: bool, error: str | None = None) -> None:
        self.ours = ours
        self.error = error


def classify(ingress: Ingress, classes: Iterable[IngressClass], ingress_class: str = DEFAULT_INGRESS_CLASS) -> Verdict:
    """Whether ``ingress`` is ours, with ``--ingress-class`` = ``ingress_class``."""
    annotated = ingress.lifecycle.annotations.get(CLASS_ANNOTATION)
    if annotated is not None:
        return Verdict(annotated == (ingress_class or DEFAULT_INGRESS_CLASS))
    by_name = {c.meta.name: c for c in classes}
    if ingress.class_name is not None:
        chosen = by_name.get(ingress.class_name)
        if chosen is None:
            return Verdict(False)  # not yet created, or another controller's: nothing to say until it exists
        return Verdict(chosen.controller in _OURS)
    defaults = sorted(name for name, c in by_name.items() if c.default)
    if len(defaults) > 1:
        ours = any(by_name[name].controller in _OURS for name in defaults)
        error = f"the cluster has {len(defaults)} default IngressClasses ({', '.join(defaults)}): name one"
        return Verdict(False, error if ours else None)
    if defaults:
        return Verdict(by_name[defaults[0]].controller in _OURS)
    return Verdict(ingress_class == "")
