"""``python -m cellblock`` runs the CLI."""

from __future__ import annotations

from cellblock.cli import main

raise SystemExit(main())
