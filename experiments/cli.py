"""Command-line glue shared by the entry points."""

from __future__ import annotations

import shlex


def expand_quoted_option(argv: list[str], option: str) -> list[str]:
    """Replace `OPTION "a b c"` by `a b c`, split with a shell's quoting rules.

    MLproject hands a parameter over as one quoted argument (`--overrides 'model=cnn reg=l2'`);
    Hydra and argparse want them one per argument.
    """
    if option not in argv:
        return argv
    at = argv.index(option)
    given = argv[at + 1] if at + 1 < len(argv) else ""
    return [*argv[:at], *shlex.split(given), *argv[at + 2 :]]
