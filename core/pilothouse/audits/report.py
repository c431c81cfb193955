"""What every audit report shares: an id, the crew, when, whether it found
anything, and how it is kept in the run store beside the runs it made."""

from __future__ import annotations

import time
import uuid
from typing import ClassVar

from pydantic import BaseModel, Field

from ..store.base import AuditRecord, RunStore


class AuditReport(BaseModel):
    """Base of the bias and adversarial reports (and of a plugin's own audits)."""

    kind: ClassVar[str] = ""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    crew: str
    created: float = Field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """True when the audit found nothing to worry about."""
        raise NotImplementedError

    @property
    def summary(self) -> str:
        """One line for lists: what was audited and what was found."""
        raise NotImplementedError

    @property
    def runs_made(self) -> list[str]:
        """The ids of the runs the audit made."""
        raise NotImplementedError

    def record(self) -> AuditRecord:
        """The report as the run store keeps it."""
        return AuditRecord(
            id=self.id,
            kind=self.kind,
            crew=self.crew,
            created=self.created,
            ok=self.ok,
            summary=self.summary,
            report=self.model_dump(mode="json"),
            run_ids=self.runs_made,
        )

    def keep(self, store: RunStore | None) -> None:
        """Store the report (no-op for a runtime without a store)."""
        if store is not None:
            store.add_audit(self.record())
