"""What ``asyncps`` says about itself rather than runs: ``asyncps config`` (every key of the experiment
config, from ``lab.schema``) and ``asyncps --version``."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

from asyncps.lab.config import Config, HogwildExperiment
from asyncps.lab.schema import render

__all__ = ["add_config", "add_version", "installed_version"]


def add_config(commands) -> None:
    command = commands.add_parser(
        "config", help="every key of the experiment config: its default, what is allowed, what it means",
        description="Print every key an experiment's TOML config (or --set) can set: the top-level keys, then each "
                    "[section]'s, with its default, what is allowed and a line saying what it means. An open "
                    "table (options, schedule, batch_schedule, delays.*) says where its own keys are documented.")
    command.add_argument("--hogwild", action="store_true", help="the keys of asyncps hogwild's config instead")
    command.set_defaults(run=run_config)


def run_config(args: argparse.Namespace) -> int:
    print(render(HogwildExperiment, "asyncps hogwild") if args.hogwild else render(Config, "asyncps run"))
    return 0


def installed_version() -> str:
    """The version of the installed ``asyncps`` package (pyproject.toml's, when it was installed)."""
    try:
        return version("asyncps")
    except PackageNotFoundError:
        raise ValueError("asyncps is not installed, so it has no version: pip install -e . at the repository's "
                         "top") from None


class _PrintVersion(argparse.Action):
    """``--version``: print the version and exit; the package metadata is read only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the installed asyncps version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            print(f"asyncps {installed_version()}")
        except ValueError as err:
            parser.exit(2, f"asyncps: error: {err}\n")
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_PrintVersion)
