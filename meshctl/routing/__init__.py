"""Route tables as Envoy evaluates them: explain a request, find shadowed routes, compare two tables.

Pure and independent of the control plane's runtime, so the CLI uses it offline and the translator uses it to
put a ``Reachable`` condition on shadowed Routes.
"""
