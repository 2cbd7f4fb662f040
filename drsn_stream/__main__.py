import sys

from drsn_stream.cli import main

sys.exit(main())
