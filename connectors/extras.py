"""Optional dependencies (pip extras): a module that is not installed fails where its feature
is used, naming the extra to install, instead of failing every import of the hub.

    try:
        import aiosmtplib
    except ImportError as exc:  # crmhub[oa] not installed
        aiosmtplib = absent("aiosmtplib", "oa", "SMTP mail", exc)

`require(aiosmtplib)` in the feature's constructor turns that into a MissingExtra at start-up.
"""

from __future__ import annotations

from typing import Any, NoReturn


class MissingExtra(ImportError):
    """A feature is used whose optional dependencies are not installed."""


class Absent:
    """Stands in for a module that is not installed; any use raises MissingExtra."""

    def __init__(self, module: str, extra: str, feature: str, error: ImportError) -> None:
        self.message = (f"{feature} needs the optional dependencies crmhub[{extra}] ({module} "
                        f"is not installed: {error}); install them with: "
                        f"pip install 'crmhub[{extra}]'")

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # introspection (copy, pickle, inspect) is no use of it
            raise AttributeError(name)
        raise MissingExtra(self.message)


def absent(module: str, extra: str, feature: str, error: ImportError) -> Any:
    return Absent(module, extra, feature, error)


def require(*modules: Any) -> None:
    """MissingExtra for the first module that is only a stand-in."""
    for module in modules:
        if isinstance(module, Absent):
            raise MissingExtra(module.message)
