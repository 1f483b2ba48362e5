"""The exception tree of the bridge.

Every failure the bridge knows about is one of three kinds, and the CLI turns
each kind into a message and an exit code in one place (``bridge.cli.main``):

* ``UserError``      - the input or the configuration is wrong; a person must act.
* ``TransientError`` - the world was unavailable (network, CRM 5xx/429); retrying helps.
* ``PermanentError`` - the CRM or a file refused something for good; retrying does not help.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class UserError(BridgeError):
    """Wrong input, arguments or configuration."""


class TransientError(BridgeError):
    """A failure that is expected to go away when retried later."""


class PermanentError(BridgeError):
    """A failure that retrying cannot fix."""
