import sys

from manifestkit.cli import main

sys.exit(main())
