import sys

from mar3d.cli.main import main

sys.exit(main())
