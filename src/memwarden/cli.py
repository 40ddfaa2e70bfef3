"""The ``memwarden`` command: ``demo``, ``watch`` and ``--version``.

- ``memwarden demo``: an async demo service reserving memory from a budget
  while a subscriber prints pressure changes; ends with a report.
- ``memwarden watch --pid PID`` or ``memwarden watch -- CMD ...``: follow a
  process' memory (RSS with children), print pressure changes, and give a leak
  verdict on its history when it ends or on Ctrl-C.
"""

from __future__ import annotations

import sys

from . import __version__

__all__ = ["main"]

_USAGE = """usage: memwarden [--version] COMMAND [ARGS]

commands:
  demo     run the demo service (memwarden demo --help)
  watch    follow a process' memory (memwarden watch --help)
"""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (also used as the console script)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "--version":
        print(f"memwarden {__version__}")
        return 0
    if command == "demo":
        from ._demo import main as demo_main

        return demo_main(rest)
    if command == "watch":
        from ._watch import main as watch_main

        return watch_main(rest)
    print(f"memwarden: unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
