"""Importing conversations from elsewhere: a Hermes Agent `state.db` (`tether import hermes`,
docs/hermes.md). Readers are pure (a file in, `ImportedConversation` records out, checked
whole before anything is written); `write.py` stores the records through `Store`."""

from tether.importing.hermes import HermesImport, HermesImportError, SkippedSession, read_hermes

__all__ = ["HermesImport", "HermesImportError", "SkippedSession", "read_hermes"]
