"""``python -m tnconv``: the ``tnconv`` command."""

import sys

from tnconv.cli import main

sys.exit(main())
