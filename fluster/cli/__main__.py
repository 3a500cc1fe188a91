import sys

from fluster.cli.main import main

sys.exit(main())
