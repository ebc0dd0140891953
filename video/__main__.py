import sys

from video.cli import main

sys.exit(main())
