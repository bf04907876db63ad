"""Errors a user can fix, and the decorator that ends a tool with their one-line message.

Every tool's ``main`` is wrapped in :func:`exits_on_user_errors`: a wrong
checkpoint, config, dataset, missing package or unsupported deployment choice
ends the tool with ``[evit_mm TOOL] message`` instead of a traceback.
"""
import functools
import re
import sys
from typing import Callable, TypeVar


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message says why and how to fix."""


class ConfigError(ValueError):
    """A config cannot be read or its settings contradict each other; the message says the fix."""


class DataError(ValueError):
    """A dataset or config mistake found before or during training; the message says the fix."""


class DatasetMissingError(FileNotFoundError):
    """The config's dataset is not on disk; the message says where it is expected."""


class MissingExtraError(ImportError):
    """A package the task needs is not installed; the message names the extra to install."""


class DeployError(ValueError):
    """A deployment choice that cannot work here (task, backend, precision, CPU, calibration
    data); the message names what fits."""


USER_ERRORS = (CheckpointError, ConfigError, DataError, DatasetMissingError, MissingExtraError,
               DeployError)
Main = TypeVar('Main', bound=Callable)


def exits_on_user_errors(tool: str) -> Callable[[Main], Main]:
    """Decorate a tool's ``main``: errors the user can fix (a bad checkpoint, a missing
    dataset or framework, a dataset mistake, an unreadable image) end it with their
    one-line message instead of a traceback."""
    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except USER_ERRORS as err:
                sys.exit(f'[evit_mm {tool}] {err}')
            except AssertionError as err:  # mmcv's LoadImageFromFile, also from a worker
                # the last match: a worker's traceback also quotes the assert's source line
                images = re.findall(r'failed to load image: (\S+)', str(err))
                if not images:
                    raise
                sys.exit(f'[evit_mm {tool}] Unreadable or corrupt image: {images[-1]}. '
                         'Replace or remove it (and its annotations).')
        return run  # type: ignore[return-value]
    return decorate
