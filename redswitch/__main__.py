from __future__ import annotations

import sys

from redswitch.cli import main

sys.exit(main())
