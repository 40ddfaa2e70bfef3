"""The memwarden command: demo, serve, info, watch and --version.

- memwarden demo: an async demo service reserving memory from a budget while a
  subscriber prints pressure changes; ends with a report. With --serve it runs
  until Ctrl-C, with the live dashboard.
- memwarden serve: a Warden for this machine or container with the HTTP API,
  Prometheus metrics and the dashboard.
- memwarden info: the memory limit memwarden detects here, its source, the
  cgroup, PSI and event sources, and the budget a Warden would use.
- memwarden watch --pid PID or memwarden watch -- CMD ...: follow a process'
  memory (RSS with children), print pressure changes, and give a leak verdict
  on its history when it ends or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from . import __version__

__all__ = ["command_parser", "main", "size_argument"]

_USAGE = """usage: memwarden [--version] COMMAND [ARGS]

commands:
  demo     run the demo service (memwarden demo --help)
  serve    serve the HTTP API and dashboard for this machine (memwarden serve --help)
  info     show the memory limit, cgroup and PSI memwarden detects (memwarden info --help)
  watch    follow a process' memory (memwarden watch --help)

options:
  --version    print the version and exit
  -h, --help   print this help and exit
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; option help is wrapped as usual."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line: the usage block argparse prints first buries the message.
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser for one memwarden command.

    Help keeps the description's line breaks; a bad argument prints one line to
    stderr and exits with status 2.
    """
    return _Parser(prog=prog, description=description, formatter_class=_Formatter)


def size_argument(text: str) -> int:
    """An argparse ``type`` for sizes: :func:`~memwarden.units.parse_size`, its message kept.

    A refused size (``512m``, ``-1``) is reported with parse_size's own
    explanation instead of argparse's "invalid value".
    """
    from .units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    if command == "serve":
        from ._serve import main as serve_main

        return serve_main(rest)
    if command == "info":
        from ._info import main as info_main

        return info_main(rest)
    if command == "watch":
        from ._watch import main as watch_main

        return watch_main(rest)
    print(f"memwarden: unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
