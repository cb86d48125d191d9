"""The commands: each parses its arguments, calls the library in ``cxr`` and prints.

Nothing in the library imports from here. Each command is ``python -m cxr.<name>`` (as README
shows) and a console script ``cxr-<name>`` (pyproject.toml); ``command`` gives them all the same
ending for a user's mistake: one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cxr.errors import DataError, ImageReadError, ModelLoadError

if TYPE_CHECKING:
    from cxr.model import ModelConfig

Main = Callable[[list[str] | None], int | None]


def command(main: Main) -> Callable[[list[str] | None], int]:
    """``main(argv)`` with a broken weights folder, an unreadable image or a wrong data folder turned
    into one line on stderr, exit 1."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except ModelLoadError as error:
            print(f"Cannot load the model: {error}", file=sys.stderr)
        except ImageReadError as error:
            print(f"Cannot read the image: {error}", file=sys.stderr)
        except DataError as error:
            print(f"Cannot use the data: {error}", file=sys.stderr)
        return 1

    return run


def print_report(results: dict, as_json: bool) -> None:
    """One JSON object on the last stdout line, or an aligned key/value table."""
    if as_json:
        print(json.dumps(results))
        return
    for key, value in results.items():
        if key == "stress":
            for name, metrics in value.items():
                print(f"  {name:20s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            continue
        print(f"{key:20s} {value:.4f}" if isinstance(value, float) else f"{key:20s} {value}")


def add_data_arguments(parser: argparse.ArgumentParser, data_help: str | None = None) -> None:
    """``--data`` (by default the Kaggle-layout folder with ``train/``) and ``--cache-dir``, as every
    command names them; ``data_help`` makes ``--data`` required and says what it is."""
    if data_help:
        parser.add_argument("--data", required=True, help=data_help)
    else:
        parser.add_argument("--data", default="../shared/data/chest_xray", help="folder with train/")
    parser.add_argument("--cache-dir", default=".cache", help="decoded images and logits cache")


def calibration_summary(folder: str | Path, config: ModelConfig) -> str:
    """What a command that wrote calibrated weights prints: where, the fit, and what it measured."""
    return (
        f"wrote {folder}: temperature {config.temperature:.3f}, bias {config.logit_bias:.3f}, "
        f"threshold {config.threshold:.3f}; validation {config.val_metrics}; "
        f"worst under the stress bank {config.stress_metrics.get('stress_worst')}"
    )
