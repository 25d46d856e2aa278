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
    "deciding_class",
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


def deciding_class(ingress: Ingress, classes: Iterable[IngressClass]) -> IngressClass | None:
    """The IngressClass that decides for ``ingress``: the one it names, else the cluster's only default; None when
    the legacy annotation decides, or no class does."""
    if ingress.lifecycle.annotations.get(CLASS_ANNOTATION) is not None:
        return None
    if ingress.class_name is not None:
        return next((c for c in classes if c.meta.name == ingress.class_name), None)
    defaults = [c for c in classes if c.default]
    return defaults[0] if len(defaults) == 1 else None


def classify(ingress: Ingress, classes: Iterable[IngressClass], ingress_class: str = DEFAULT_INGRESS_CLASS) -> Verdict:
    """Whether ``ingress`` is ours, with ``--ingress-class`` = ``ingress_class``."""
    classes = list(classes)
    annotated = ingress.lifecycle.annotations.get(CLASS_ANNOTATION)
    if annotated is not None:
        return Verdict(annotated == (ingress_class or DEFAULT_INGRESS_CLASS))
    if ingress.class_name is None:
        defaults = sorted((c for c in classes if c.default), key=lambda c: c.meta.name)
        if len(defaults) > 1:
            ours = any(c.controller in _OURS for c in defaults)
            names = ", ".join(c.meta.name for c in defaults)
            error = f"the cluster has {len(defaults)} default IngressClasses ({names}): name one"
            return Verdict(False, error if ours else None)
        if not defaults:
            return Verdict(ingress_class == "")
    # (a named class not created yet, or another controller's: not ours, nothing to say until it exists)
    chosen = deciding_class(ingress, classes)
    return Verdict(chosen is not None and chosen.controller in _OURS)
