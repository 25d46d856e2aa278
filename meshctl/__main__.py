"""``python -m meshctl`` is ``meshctl``."""

import sys

from meshctl.cli.main import main

sys.exit(main())
