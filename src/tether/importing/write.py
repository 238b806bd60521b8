"""Storing what a reader returned: one `Store.import_conversation` (one transaction) per
conversation, in the reader's order (a fork after its source). A conversation whose id or an
alias already names one in the tenant is left as it is, so importing the same file again
writes nothing. `tether import hermes` and bench/hermes_import.py both go through here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tether.store.base import ImportedConversation, Store


@dataclass(slots=True)
class WriteReport:
    imported: list[str] = field(default_factory=list)  # conversation ids written
    already: list[str] = field(default_factory=list)  # ids the tenant already had: left alone
    messages: int = 0  # written
    aliases: int = 0
    checkpoints: int = 0


async def write_conversations(
    store: Store,
    tenant_id: str,
    conversations: Sequence[ImportedConversation],
    progress: Callable[[int], None] | None = None,
) -> WriteReport:
    """Write each conversation; `progress(n)` after each with its message count."""
    await store.ensure_tenant(tenant_id)
    report = WriteReport()
    for conv in conversations:
        stored = await store.import_conversation(tenant_id, conv)
        if stored is None:
            report.already.append(conv.id)
        else:
            report.imported.append(conv.id)
            report.messages += len(conv.messages)
            report.aliases += len(conv.aliases)
            report.checkpoints += len(conv.checkpoints)
        if progress is not None:
            progress(len(conv.messages))
    return report
