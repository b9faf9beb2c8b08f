import sys

from cyntk.cli import main

sys.exit(main())
