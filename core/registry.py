"""Finding the modules of a plug-in package (core/methods/, core/stages/) by themselves: every module that defines
the package's object (METHOD, STAGE) is registered under that object's `name`, so adding one is adding its file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def discover(package: str, path: Iterable[str], attribute: str, kind: type[T], order: Sequence[str]) -> dict[str, T]:
    """{name: object} of every module in `package` (at `path`) whose `attribute` is a `kind`, in `order` first and
    the others after them by name."""
    found: dict[str, T] = {}
    for module in pkgutil.iter_modules(path):
        item = getattr(importlib.import_module(f"{package}.{module.name}"), attribute, None)
        if isinstance(item, kind):
            found[item.name] = item
    rank = {name: index for index, name in enumerate(order)}
    return dict(sorted(found.items(), key=lambda entry: (rank.get(entry[0], len(rank)), entry[0])))
