"""The connection to the Gaia archive: astroquery's client of a configurable URL, a quick
connectivity probe, socket timeouts, and retries with back-off.

`astroquery.gaia` is imported only inside `gaia_client`, with its import-time archive call
refused (`_gaia_class`). What is asked of the archive, and what is done with the answers, is in
`rrlfeh.data.gaia`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ARCHIVE_URL = "https://gea.esac.esa.int/"  # both the TAP and the DataLink (data-server) endpoints
GAIA_HOST = "gea.esac.esa.int"
GAIA_PORT = 443

T = TypeVar("T")
_sleep: Callable[[float], None] = time.sleep  # module-level so tests can record the back-off


class ArchiveUnreachable(ConnectionError):
    """The Gaia archive host cannot be reached (no network, DNS failure, or no answer in time)."""


class BatchFailed(ConnectionError):
    """A call to the archive kept failing after all its retries (the message names what is
    missing)."""


def probe_archive(host: str = GAIA_HOST, port: int = GAIA_PORT, *, timeout_s: float = 5.0,
                  tls: bool = True) -> None:
    """Raise `ArchiveUnreachable` unless host:port answers within about `timeout_s` seconds.

    Three steps share the time: DNS lookup (in a daemon thread, since `getaddrinfo` ignores socket
    timeouts and can hang), TCP connect, and, with `tls`, a TLS handshake that verifies the host
    name — a bare TCP connect is not enough where a gateway accepts connections to any address.
    """
    deadline = time.monotonic() + timeout_s
    found: dict[str, Any] = {}

    def resolve() -> None:
        try:
            found["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            found["error"] = err

    def unreachable(why: str) -> ArchiveUnreachable:
        return ArchiveUnreachable(f"The Gaia archive cannot be reached: {host}:{port} ({why}). "
                                  "Check the network, or use an offline data source.")

    worker = threading.Thread(target=resolve, name=f"dns-{host}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise unreachable(f"DNS lookup gave no answer within {timeout_s:g} s")
    if "error" in found:
        raise unreachable(f"DNS lookup failed: {found['error']}")
    errors = []
    for family, kind, proto, _, address in found["addrs"]:
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append(f"no answer within {timeout_s:g} s")
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(address)
                if tls:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    context = ssl.create_default_context()
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
                return
        except OSError as err:  # ssl.SSLError and socket.timeout are OSErrors too
            errors.append(f"{address[0]}: {err or type(err).__name__}")
    raise unreachable(f"{'TLS' if tls else 'TCP'} connection failed: {'; '.join(errors)}")


@contextlib.contextmanager
def socket_timeout(timeout_s: float) -> Iterator[None]:
    """Set the default socket timeout for the block (astroquery's TAP client sets none)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def parse_archive_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an archive base URL such as https://gea.esac.esa.int/ or
    http://127.0.0.1:8000/ (astroquery adds /tap-server and /data-server itself)."""
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"acquire.gaia.archive_url {url!r}: expected http(s)://host[:port]/ "
                         "(no path: astroquery adds /tap-server and /data-server)")
    tls = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if tls else 80), tls


def _gaia_class() -> type:
    """astroquery's GaiaClass. Its module builds a client on import that asks the ESA archive for
    status messages (and prints); that one call is refused here, whatever the URL in use."""
    if "astroquery.gaia.core" not in sys.modules:
        from astroquery.utils.tap.conn.tapconn import TapConn

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OSError("rrlfeh: no archive call while astroquery.gaia is imported")

        real = TapConn.execute_tapget
        TapConn.execute_tapget = refuse
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                import astroquery.gaia.core  # noqa: F401
        finally:
            TapConn.execute_tapget = real
    from astroquery.gaia import GaiaClass

    return GaiaClass


def gaia_client(*, archive_url: str = ARCHIVE_URL, timeout_s: float = 30.0,
                probe_timeout_s: float = 5.0) -> Any:
    """A live astroquery Gaia client of `archive_url`, after the connectivity probe (http means
    no TLS in the probe); astroquery is imported lazily."""
    host, port, tls = parse_archive_url(archive_url)
    probe_archive(host, port, timeout_s=probe_timeout_s, tls=tls)
    gaia_class = _gaia_class()
    with socket_timeout(timeout_s):
        return gaia_class(gaia_tap_server=archive_url, gaia_data_server=archive_url,
                          show_server_messages=False)


@contextlib.contextmanager
def astroquery_call(timeout_s: float, work_dir: Path | None = None) -> Iterator[None]:
    """One astroquery call: a socket timeout (its HTTP connections take the default), its stdout
    prints (error bodies) sent to the debug log, and, with `work_dir`, that folder as the cwd
    (astroquery unpacks DataLink zips into temp_* folders of the cwd; a killed run leaves them
    there, so they are cleared on the next call)."""
    printed = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(socket_timeout(timeout_s))
        stack.enter_context(contextlib.redirect_stdout(printed))
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            for stale in work_dir.glob("temp_*"):
                shutil.rmtree(stale, ignore_errors=True)
            stack.enter_context(contextlib.chdir(work_dir))
        try:
            yield
        finally:
            if printed.getvalue().strip():
                log.debug("astroquery printed: %s", printed.getvalue().strip())


def with_retries(call: Callable[[], T], *, what: str, retries: int, backoff_s: float) -> T:
    """Run `call`; on failure retry up to `retries` times, sleeping backoff_s * 2**k between tries.

    Programming errors (TypeError, AttributeError, NameError) are not retried.
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return call()
        except (TypeError, AttributeError, NameError):
            raise
        except Exception as err:  # network, HTTP, truncated-download errors: all worth a retry
            last = err
            if attempt == retries:
                break
            delay = backoff_s * 2.0 ** attempt
            log.warning("%s failed (%s: %s); retry %d/%d in %.3g s",
                        what, type(err).__name__, err, attempt + 1, retries, delay)
            _sleep(delay)
    text = " ".join(str(last).split())  # one line (HTTP error bodies hold newlines)
    raise BatchFailed(f"{what} failed after {retries + 1} attempts; last error "
                      f"{type(last).__name__}: {text}") from last
