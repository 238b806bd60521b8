"""Who may run what, and where a turn's events go: the per-conversation turn lock, the registry of
turns running here and their event streams, the view cache's validity, the owner id that start-up
sweeps are limited to. `base.Coordinator` is the seam; `local.LocalCoordinator` is the
in-process implementation (one server per database)."""
