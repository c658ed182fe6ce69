"""`modeltap-monitor` entry point (the monitor job lands with its own issue)."""

import sys


def main() -> int:
    print("modeltap-monitor: the monitor job is not built yet; see the README.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
