"""`modeltap-proxy` entry point (the proxy lands with its own issue)."""

import sys


def main() -> int:
    print("modeltap-proxy: the proxy is not built yet; see the README.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
