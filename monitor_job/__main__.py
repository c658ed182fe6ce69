"""``python -m monitor_job`` = ``modeltap-monitor``."""

import sys

from monitor_job.cli import main

if __name__ == "__main__":
    sys.exit(main())
