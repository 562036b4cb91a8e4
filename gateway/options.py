"""Command-line options more than one `gateway` subcommand takes, defined once, so that
`serve` and `conform` read the same contracts by the same flag, variable and default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEFAULT_CONTRACTS = "schemas/ops"


def contracts_option(help: str = "Folder of <op>.json contract files.") -> Callable[..., Any]:
    """`--contracts DIR` (env GATEWAY_CONTRACTS), passed as `contracts_dir`."""
    return click.option(
        "--contracts",
        "contracts_dir",
        envvar="GATEWAY_CONTRACTS",
        default=DEFAULT_CONTRACTS,
        type=click.Path(file_okay=False, path_type=Path),
        show_envvar=True,
        help=help,
    )
