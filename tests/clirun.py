"""Running the ``hashdup`` console script in-process, as a user's shell would: exit codes and error lines are the
script's (``hashdup.cli.main``), not click's standalone handling."""

from __future__ import annotations

from click.testing import CliRunner, Result

from hashdup.cli import main


class _Main:
    """``main`` shaped like a click command for CliRunner."""

    name = "hashdup"

    def main(self, args=None, prog_name=None, **kwargs):
        main(list(args))


def run_script(*args) -> Result:
    """``hashdup ARGS...`` (each argument str()-ed), stdout and stderr captured separately."""
    return CliRunner().invoke(_Main(), [str(a) for a in args])
