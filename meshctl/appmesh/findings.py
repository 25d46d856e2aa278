"""What the import reports: every field that did not map cleanly, and every object it could not convert."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Finding", "Level"]


class Level(StrEnum):
    ERROR = "error"  # the object (or the whole file) was not converted
    LOSSY = "lossy"  # converted, but a field has no equivalent: ``action`` says what was done instead
    NOTE = "note"  # converted faithfully; something behaves differently and is worth knowing


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    subject: str  # "VirtualNode demo/front", or a file for load problems
    path: str  # field path, e.g. "spec.listeners[0].tls"; "" for the whole object
    level: Level
    message: str
    action: str = ""

    def line(self) -> str:
        where = f"{self.subject}: {self.path}" if self.path else self.subject
        action = f" -> {self.action}" if self.action else ""
        return f"{self.level.value}: {where}: {self.message}{action}"

    def as_dict(self) -> dict[str, str]:
        return {
            "level": self.level.value,
            "object": self.subject,
            "path": self.path,
            "message": self.message,
            "action": self.action,
        }
