"""``python -m forge_hub.cli``: the same as the ``forge-hub`` command."""

from forge_hub.cli import main

raise SystemExit(main())
