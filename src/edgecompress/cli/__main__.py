import sys

from edgecompress.cli import main

sys.exit(main())
