"""Error hierarchy of the SDK.

Every error a user can cause derives from :class:`EdgeSDKError`; the CLIs
print those as one line and exit with :attr:`EdgeSDKError.exit_code`. A bug in
the SDK itself raises :class:`InternalError` (printed with a traceback).
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Root of every error caused by input, configuration or environment.

    Messages say what failed, what was expected, what was received and how
    to fix it.
    """

    exit_code: int = 3


class InvalidInputError(EdgeSDKError, ValueError):
    """A graph or tensor handed to the runtime does not match the model.

    Attributes:
        field: Name of the offending input field (``x``, ``edge_index``...).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ManifestError(EdgeSDKError):
    """A bundle or manifest is malformed, tampered, truncated or too new.

    Attributes:
        path: File the problem was found in (relative to the bundle), if any.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ProfileError(EdgeSDKError):
    """A device profile is unknown or does not validate."""


class ExportError(EdgeSDKError):
    """The build-time pipeline could not produce an artifact."""


class UnsupportedModelError(ExportError):
    """The model uses a layer or an option the exporter cannot lower."""


class ParityError(ExportError):
    """An exported artifact does not reproduce the reference model."""

    exit_code = 4


class AccuracyError(ExportError):
    """The task metric dropped beyond the allowed bound."""

    exit_code = 4


class UnsupportedTargetError(EdgeSDKError):
    """No artifact in the bundle can run on the requested backend/profile."""


class BackendUnavailableError(EdgeSDKError, ImportError):
    """An inference engine (or other optional dependency) is missing or failed to load.

    Also an ``ImportError`` so ``try: import edge_sdk.exporters / except ImportError``
    works as users expect.
    """


class ConfigError(EdgeSDKError):
    """A node or fleet configuration (file, flag or URL) is invalid."""


class SignatureError(EdgeSDKError):
    """A bundle signature is missing, malformed, or not made by a trusted key."""


class UntrustedBundleError(SignatureError):
    """Trusted keys were given and the bundle's signature check failed.

    The CLIs exit with 5 for it, so scripts can tell "not trusted" from other
    bundle problems (exit 3).

    Attributes:
        reason: ``unsigned`` (no ``manifest.sig``), ``mismatch`` (the manifest
            was altered after signing, or the signature was), ``unknown_key``
            (signed by a key that is not trusted), ``malformed`` (not a
            signature document, or an unsupported algorithm).
    """

    exit_code = 5

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UpdateError(EdgeSDKError):
    """A model update was refused (transfer, verification, version or health check).

    Attributes:
        step: The update step that refused it (``offer``, ``download``,
            ``verify``, ``stage``, ``canary``, ``swap``).
    """

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"update refused at {step}: {message}")


class OverloadedError(EdgeSDKError):
    """The service cannot take a request now; retry later (HTTP 503).

    Raised when the dynamic batcher's queue is full, and set on requests still
    queued when the batcher closes. The message says how many were waiting.
    """


class InternalError(Exception):
    """A bug in edge-graph-sdk: please report it with the traceback."""


__all__ = [
    "AccuracyError",
    "BackendUnavailableError",
    "ConfigError",
    "EdgeSDKError",
    "ExportError",
    "InternalError",
    "InvalidInputError",
    "ManifestError",
    "OverloadedError",
    "ParityError",
    "ProfileError",
    "SignatureError",
    "UnsupportedModelError",
    "UnsupportedTargetError",
    "UntrustedBundleError",
    "UpdateError",
]
