"""Import from AWS App Mesh (``appmesh.k8s.aws/v1beta2``): ``meshctl import appmesh``.

``load`` reads manifest files and directories (multi-document YAML, ``${VAR}`` placeholders reported or
substituted); ``convert`` turns the App Mesh objects into our VirtualNodes, Routes and the Services they need, with
a finding for everything that does not map cleanly. Both are pure of I/O beyond reading the given files.
"""

from meshctl.appmesh.convert import ImportResult, convert
from meshctl.appmesh.findings import Finding
from meshctl.appmesh.load import SourceDoc, load_paths

__all__ = ["Finding", "ImportResult", "SourceDoc", "convert", "load_paths"]
