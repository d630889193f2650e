"""The Lambda Extensions API, as the sidecar uses it (``warmdb sidecar --lambda-extension``).

Lambda starts every executable in ``/opt/extensions`` at the beginning of the Init phase; the
file name is the extension's name. The API lives at
``http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension``:

* ``POST /register``, header ``Lambda-Extension-Name``, body ``{"events": [...]}``; the reply's
  ``Lambda-Extension-Identifier`` header identifies the extension in every later call.
  On Lambda Managed Instances (``AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances``) an
  extension may register for ``SHUTDOWN`` only; elsewhere for ``INVOKE`` and ``SHUTDOWN``.
* ``GET /event/next`` blocks until the next event; the first call also tells Lambda the
  extension is ready, ending its part of Init.
* ``POST /init/error`` (header ``Lambda-Extension-Function-Error-Type``) reports a failed
  start; Lambda then fails the Init phase with that error instead of waiting.

The sidecar starts PgBouncer *before* registering, so the state file exists by the time the
function's code runs; a failed start still registers, to report it through ``/init/error``.
On standard Lambda the environment is frozen between invocations and no timer runs, so each
``INVOKE`` makes the supervisor look at the token at once.
"""

from __future__ import annotations

import http.client
import json
import logging

from warmdb.errors import ConfigurationError, WarmdbError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from warmdb.sidecar.supervisor import Sidecar

__all__ = ["ExtensionsClient", "registration_events", "run_extension"]

logger = logging.getLogger(__name__)

API_PATH = "/2020-01-01/extension"
MANAGED_INSTANCES = "lambda-managed-instances"


class ExtensionsApiError(WarmdbError):
    """The Extensions API answered with an error, or could not be reached."""

    __module__ = "warmdb.sidecar.extension"


def registration_events(environ: Mapping[str, str]) -> list[str]:
    """The events to register for: ``SHUTDOWN`` only on Lambda Managed Instances."""
    if environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == MANAGED_INSTANCES:
        return ["SHUTDOWN"]
    return ["INVOKE", "SHUTDOWN"]


class ExtensionsClient:
    """A client of the Extensions API at *runtime_api* (``host:port``), for extension *name*."""

    def __init__(self, runtime_api: str, name: str) -> None:
        if not runtime_api:
            raise ConfigurationError(
                "AWS_LAMBDA_RUNTIME_API is not set: --lambda-extension runs inside Lambda only"
            )
        host, _, port = runtime_api.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"AWS_LAMBDA_RUNTIME_API={runtime_api!r} is not host:port")
        self.host = host
        self.port = int(port)
        self.name = name
        self.identifier: str | None = None

    def _request(
        self, method: str, path: str, body: object | None, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, bytes]:
        # No timeout: /event/next blocks for as long as the environment lives.
        connection = http.client.HTTPConnection(self.host, self.port)
        try:
            payload = None if body is None else json.dumps(body).encode()
            connection.request(method, API_PATH + path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            raise ExtensionsApiError(f"{method} {path}: {exc}") from exc
        finally:
            connection.close()
        if response.status >= 300:
            raise ExtensionsApiError(f"{method} {path}: HTTP {response.status}")
        return response, data

    def _identified(self) -> dict[str, str]:
        if self.identifier is None:
            raise RuntimeError("register first")
        return {"Lambda-Extension-Identifier": self.identifier}

    def register(self, events: list[str]) -> str:
        """Register for *events*; return (and remember) the extension identifier."""
        response, _ = self._request(
            "POST",
            "/register",
            {"events": events},
            {"Lambda-Extension-Name": self.name, "Content-Type": "application/json"},
        )
        identifier = response.getheader("Lambda-Extension-Identifier")
        if not identifier:
            raise ExtensionsApiError("POST /register: no Lambda-Extension-Identifier header")
        self.identifier = identifier
        return identifier

    def next_event(self) -> dict[str, object]:
        """Wait for the next event (``{"eventType": "INVOKE" | "SHUTDOWN", ...}``)."""
        _, data = self._request("GET", "/event/next", None, self._identified())
        try:
            event = json.loads(data)
        except ValueError:
            raise ExtensionsApiError("GET /event/next: the reply is not JSON") from None
        if not isinstance(event, dict):
            raise ExtensionsApiError("GET /event/next: the reply is not a JSON object")
        return event

    def init_error(self, error_type: str, message: str) -> None:
        """Report a failed start; Lambda fails the Init phase with it."""
        headers = {**self._identified(), "Lambda-Extension-Function-Error-Type": error_type}
        self._request(
            "POST", "/init/error", {"errorMessage": message, "errorType": error_type}, headers
        )


def run_extension(
    start: Callable[[], Sidecar],
    environ: Mapping[str, str],
    *,
    name: str,
    started: Callable[[Sidecar], None] | None = None,
) -> int:
    """Run the sidecar as a Lambda extension until ``SHUTDOWN``; return the exit status.

    :param start: starts the sidecar (and raises if it cannot).
    :param environ: the environment (``AWS_LAMBDA_RUNTIME_API``,
        ``AWS_LAMBDA_INITIALIZATION_TYPE``).
    :param name: the extension name: the launcher's file name.
    :param started: called with the running sidecar, before registering (to print it).
    """
    client = ExtensionsClient(environ.get("AWS_LAMBDA_RUNTIME_API", ""), name)
    events = registration_events(environ)
    try:
        sidecar = start()
    except WarmdbError as exc:
        error_type = (
            "Extension.ConfigInvalid"
            if isinstance(exc, ConfigurationError)
            else "Extension.StartFailed"
        )
        client.register(events)
        client.init_error(error_type, str(exc))
        logger.error("the sidecar did not start: %s", exc)
        return 1
    try:
        if started is not None:
            started(sidecar)
        client.register(events)
        while True:
            event = client.next_event()
            if event.get("eventType") == "SHUTDOWN":
                logger.info("SHUTDOWN (%s): stopping", event.get("shutdownReason", "no reason"))
                return 0
            # INVOKE: the environment may just have thawed; look at the token now.
            sidecar.request_refresh()
    finally:
        sidecar.stop()
