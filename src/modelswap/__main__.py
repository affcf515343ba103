import sys

from modelswap.cli import main

sys.exit(main())
