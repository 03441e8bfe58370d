"""Former name of ``nfzoo.architectures`` (the builders of named architectures), kept for one
release: importing it warns, and every name is looked up in ``nfzoo.architectures``."""

import warnings

from nfzoo import architectures as _architectures

warnings.warn(
    "nfzoo.models is now nfzoo.architectures; nfzoo.models will be removed in the next release.",
    FutureWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_architectures, name)


def __dir__() -> list[str]:
    return dir(_architectures)
