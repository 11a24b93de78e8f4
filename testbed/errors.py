"""Errors the harness raises. Each one says what went wrong and what to do."""

from __future__ import annotations


class TestbedError(Exception):
    """Base class: ``str(err)`` is one line naming the problem and the remedy."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}; {hint}" if hint else message)


class ConfigError(TestbedError):
    """A bad argument or configuration, detected before anything starts."""


class BuildError(TestbedError):
    """A build step failed; the message names the log with the full output."""


class GuestError(TestbedError):
    """The guest panicked, a node died, or the guest did not answer in time."""


class NodeDied(GuestError):
    """A QEMU node process exited while the harness still needed it."""

    def __init__(self, message: str, hint: str = "", node: int = -1) -> None:
        super().__init__(message, hint)
        self.node = node


class GuestPanic(GuestError):
    """The guest kernel reported a panic or an oops on its console."""


class GuestTimeout(GuestError):
    """The guest did not produce the expected output before the deadline."""


class RecordError(TestbedError):
    """A run record that cannot be read: damaged, or of a schema this testbed does not know."""


class StoreError(TestbedError):
    """The results store cannot be used: not a store, damaged, or of an unknown version."""
