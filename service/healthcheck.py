"""`python -m service.healthcheck [URL]`: exit 0 when the local service is ready.

The container's HEALTHCHECK (no curl in slim images). Default URL: /readyz on SINGER_PORT.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from service.settings import Settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    url = argv[0] if argv else f"http://127.0.0.1:{Settings().port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as err:
        print(f"{url}: {err}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
