"""``python -m cellblock`` runs the command line (:func:`cellblock.cli.main`)."""

from __future__ import annotations

from cellblock.cli import main

raise SystemExit(main())
