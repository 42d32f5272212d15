"""An offline Planetary Computer double on 127.0.0.1, serving real recorded STAC JSON.

Layout mirrors the real service:
  /api/stac/v1/                                   landing page (recorded)
  /api/stac/v1/collections[/sentinel-2-l2a]       collection (recorded)
  /api/stac/v1/collections/sentinel-2-l2a/items/ID one item
  /api/stac/v1/search                             GET and POST item search, paged by `next` links
  /api/sas/v1/token/{account}/{container}         SAS token, in the real reply shape
  /blob/<container>/<path>                        COG files, with HTTP Range requests (GET, HEAD)

Asset hrefs of the items point at Azure Blob Storage; the double rewrites them to its /blob/
path, which serves tests/data/cogs/ (and any folder added with `serve_files`) and counts the
bytes it sends per file, so tests can prove what was (not) downloaded.

Search filters: collections, ids, intersects, bbox, datetime, query on eo:cloud_cover, limit.
Faults can be injected per path prefix: an HTTP status (optionally with Retry-After), a slow reply,
a truncated body. `blob_base` points asset hrefs elsewhere (a closed port, a `SilentServer`);
`token_lifetime` sets how long issued SAS tokens last. Slow mode (`slow_down`) delays every answer
under a path prefix and/or trickles its body at a set rate, for as long as it is on: Cancel must
not wait for it. `SilentServer` accepts connections and never answers; `closed_port()` gives a
loopback port where connections are refused.
Run standalone with `python tests/pc_server.py` (prints the URLs; Ctrl-C stops it).
"""

import argparse
import json
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlparse

from shapely.geometry import box, shape

DATA_DIR = Path(__file__).resolve().parent / "data" / "stac"
COG_DIR = Path(__file__).resolve().parent / "data" / "cogs"
REAL_STAC_ROOT = "https://planetarycomputer.microsoft.com/api/stac/v1"
REAL_BLOB_ROOT = "https://sentinel2l2a01.blob.core.windows.net"
BLOB_PREFIX = "/blob"
STAC_PREFIX = "/api/stac/v1"
SAS_PREFIX = "/api/sas/v1/token"
COLLECTION = "sentinel-2-l2a"


def load_recorded_items(data_dir=DATA_DIR):
    """Every item in tests/data/stac: the recorded ones and the fixture item built from the
    real T29UNU scene (see tests/data/README.md)."""
    items = []
    for path in sorted(data_dir.glob("pc_item*.json")) + sorted(data_dir.glob("fixture_item*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, list):
            items.extend(data)
        elif data.get("type") == "FeatureCollection":
            items.extend(data["features"])
        else:
            items.append(data)
    return items


@dataclass
class Fault:
    path_prefix: str  # e.g. "/api/stac/v1/search"
    kind: str  # "status", "slow" or "truncate"
    times: int = 1  # how many matching requests it hits
    status: int = 503
    delay: float = 5.0
    retry_after: str = None  # the Retry-After header of a "status" fault


class PlanetaryComputerDouble:
    """Start with `start()` (or as a context manager); `url` is the STAC root."""

    def __init__(self, items=None, serve_collection=True, data_dir=DATA_DIR):
        self.items = sorted(items if items is not None else load_recorded_items(data_dir), key=_newest_first)
        self.serve_collection = serve_collection
        self.landing = json.loads((data_dir / "pc_root_catalog.json").read_text())
        self.collection = json.loads((data_dir / "pc_collection_sentinel-2-l2a.json").read_text())
        self.requests = []  # (method, path, headers dict, body) of every request
        self.bytes_served = {}  # /blob/... path -> bytes of file content sent
        self.file_roots = {BLOB_PREFIX + "/sentinel2-l2": COG_DIR / "sentinel2-l2"}
        self.faults = []
        self.blob_base = None  # where asset hrefs point; None: this server's /blob
        self.token_lifetime = timedelta(hours=1)
        self.tokens_issued = 0
        self.slow = None  # (path prefix, delay s, body bytes per s or None): see slow_down
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base(self):
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self):
        return self.base + STAC_PREFIX

    @property
    def sas_url(self):
        return self.base + SAS_PREFIX

    # -- faults and records ----------------------------------------------------------------
    def inject(self, path_prefix, kind, times=1, status=503, delay=5.0, retry_after=None):
        with self._lock:
            self.faults.append(Fault(path_prefix, kind, times, status, delay, retry_after))

    def take_fault(self, path):
        with self._lock:
            for fault in self.faults:
                if path.startswith(fault.path_prefix) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def slow_down(self, delay=0.0, bytes_per_second=None, path_prefix=""):
        """Slow mode: every request under `path_prefix` waits `delay` s before its answer, and its
        body is sent in small pieces at `bytes_per_second` (None: at once). Call with no arguments
        to end it."""
        self.slow = (path_prefix, delay, bytes_per_second) if delay or bytes_per_second else None

    def pace(self, path):
        """Slow mode's delay before an answer under its prefix."""
        slow = self.slow
        if slow and path.startswith(slow[0]) and slow[1]:
            self.wait(slow[1])

    def send_body(self, wfile, path, payload):
        """Writes a body, trickled in slow mode; returns the bytes sent."""
        slow = self.slow
        rate = slow[2] if slow and path.startswith(slow[0]) else None
        if not rate:
            wfile.write(payload)
            return len(payload)
        piece = max(256, int(rate / 20))  # about 20 pieces a second
        for start in range(0, len(payload), piece):
            if self._stopping.is_set():
                return start
            wfile.write(payload[start:start + piece])
            wfile.flush()
            self.wait(len(payload[start:start + piece]) / rate)
        return len(payload)

    def serve_files(self, url_prefix, folder):
        """Serves `folder` under `url_prefix` (e.g. "/blob/extra") with Range support."""
        self.file_roots[url_prefix.rstrip("/")] = Path(folder)
        return self.base + url_prefix.rstrip("/")

    def file_for(self, path):
        for prefix, folder in self.file_roots.items():
            if path.startswith(prefix + "/"):
                candidate = (folder / path[len(prefix) + 1:]).resolve()
                if candidate.is_file() and folder.resolve() in candidate.parents:
                    return candidate
        return None

    def count_bytes(self, path, count):
        with self._lock:
            self.bytes_served[path] = self.bytes_served.get(path, 0) + count

    def total_bytes_served(self):
        return sum(self.bytes_served.values())

    def requests_to(self, path_prefix):
        return [r for r in self.requests if r[1].startswith(path_prefix)]

    def wait(self, seconds):
        """Sleep that ends early when the server stops."""
        self._stopping.wait(seconds)

    # -- STAC ------------------------------------------------------------------------------
    def rewrite(self, document):
        """Point the recorded links at this server."""
        text = json.dumps(document).replace(REAL_STAC_ROOT, self.url)
        text = text.replace(REAL_BLOB_ROOT, self.blob_base or self.base + BLOB_PREFIX)
        return json.loads(text)

    def search(self, params, method):
        matches = [item for item in self.items if _matches(item, params)]
        limit = int(params.get("limit") or 10)
        start = 0
        token = params.get("token")
        if token:
            last_id = token.rsplit(":", 1)[-1]
            start = next((i + 1 for i, item in enumerate(matches) if item["id"] == last_id), len(matches))
        page = matches[start : start + limit]
        links = [{"rel": "root", "type": "application/json", "href": self.url + "/"}]
        if start + limit < len(matches):
            next_token = f"next:{COLLECTION}:{page[-1]['id']}"
            links.append(self._next_link(params, method, next_token))
        return {
            "type": "FeatureCollection",
            "features": [self.rewrite(item) for item in page],
            "links": links,
        }

    def _next_link(self, params, method, token):
        if method == "POST":
            body = dict(params, token=token)
            return {"rel": "next", "type": "application/geo+json", "method": "POST",
                    "href": self.url + "/search", "body": body, "merge": False}
        query = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in params.items() if k != "token"}
        query["token"] = token
        return {"rel": "next", "type": "application/geo+json", "method": "GET",
                "href": self.url + "/search?" + urlencode(query, quote_via=quote)}

    def sas_token(self):
        now = datetime.now(timezone.utc)
        expiry = now + self.token_lifetime
        with self._lock:
            self.tokens_issued += 1
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        token = (
            f"st={quote(now.strftime(fmt))}&se={quote(expiry.strftime(fmt))}&sp=rl&sv=2024-05-04&sr=c"
            "&skoid=00000000-0000-0000-0000-000000000000&sig=loopback-double-signature"
        )
        return {"msft:expiry": expiry.strftime(fmt), "token": token}


def _newest_first(item):
    return (item["properties"]["datetime"], item["id"])


def _matches(item, params):
    collections = params.get("collections")
    if collections and COLLECTION not in _as_list(collections):
        return False
    ids = params.get("ids")
    if ids and item["id"] not in _as_list(ids):
        return False
    footprint = shape(item["geometry"])
    if params.get("intersects") and not footprint.intersects(shape(_as_json(params["intersects"]))):
        return False
    if params.get("bbox") and not footprint.intersects(box(*_bbox(params["bbox"]))):
        return False
    if params.get("datetime") and not _in_interval(item["properties"]["datetime"], params["datetime"]):
        return False
    return _passes_query(item["properties"], _as_json(params.get("query") or {}))


def _as_list(value):
    return value.split(",") if isinstance(value, str) else list(value)


def _as_json(value):
    return json.loads(value) if isinstance(value, str) else value


def _bbox(value):
    values = [float(v) for v in _as_list(value)]
    return values[:2] + values[-2:] if len(values) == 6 else values


def _parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _in_interval(when, interval):
    moment = _parse_time(when)
    if "/" not in interval:
        return moment == _parse_time(interval)
    low, high = interval.split("/")
    return (low in ("", "..") or moment >= _parse_time(low)) and (high in ("", "..") or moment <= _parse_time(high))


_OPERATORS = {
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
}


def _passes_query(properties, query):
    for name, conditions in query.items():
        value = properties.get(name)
        for op, expected in conditions.items():
            if value is None or not _OPERATORS[op](value, expected):
                return False
    return True


def _handler_for(double):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):  # noqa: N802
            self._handle("GET")

        def do_POST(self):  # noqa: N802
            self._handle("POST")

        def do_HEAD(self):  # noqa: N802
            self._handle("HEAD")

        def _handle(self, method):
            parsed = urlparse(self.path)
            if parsed.path.startswith(BLOB_PREFIX + "/"):
                return self._handle_file(method, parsed)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            double.requests.append((method, parsed.path, dict(self.headers), body))
            fault = double.take_fault(parsed.path)
            if fault and fault.kind == "status":
                return self._send(fault.status, {"code": "InjectedFault", "description": f"HTTP {fault.status}"},
                                  retry_after=fault.retry_after)
            if fault and fault.kind == "slow":
                double.wait(fault.delay)
            double.pace(parsed.path)
            status, document = self._route(method, parsed, body)
            try:
                self._send(status, document, truncate=bool(fault and fault.kind == "truncate"))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

        def _handle_file(self, method, parsed):
            double.requests.append((method, parsed.path, dict(self.headers), b""))
            fault = double.take_fault(parsed.path)
            if fault and fault.kind == "status":
                return self._send(fault.status, {"code": "InjectedFault"}, retry_after=fault.retry_after)
            if fault and fault.kind == "slow":
                double.wait(fault.delay)
            double.pace(parsed.path)
            path = double.file_for(parsed.path)
            if path is None:
                return self._send(404, {"code": "BlobNotFound", "path": parsed.path})
            size = path.stat().st_size
            start, end = 0, size - 1
            ranged = _parse_range(self.headers.get("Range"), size)
            if ranged:
                start, end = ranged
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if method == "HEAD":
                return
            with open(path, "rb") as handle:
                handle.seek(start)
                payload = handle.read(end - start + 1)
            if fault and fault.kind == "truncate":
                payload = payload[: len(payload) // 2]
                self.close_connection = True
            try:
                double.count_bytes(parsed.path, double.send_body(self.wfile, parsed.path, payload))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _route(self, method, parsed, body):
            path = parsed.path.rstrip("/")
            if path.startswith(SAS_PREFIX + "/"):
                return 200, double.sas_token()
            if path == STAC_PREFIX:
                return 200, double.rewrite(double.landing)
            if path == STAC_PREFIX + "/collections":
                collections = [double.rewrite(double.collection)] if double.serve_collection else []
                return 200, {"collections": collections, "links": []}
            if path.startswith(f"{STAC_PREFIX}/collections/{COLLECTION}") and double.serve_collection:
                return self._collection_route(path)
            if path == STAC_PREFIX + "/search":
                params = json.loads(body or b"{}") if method == "POST" else _query_params(parsed.query)
                return 200, double.search(params, method)
            return 404, {"code": "NotFoundError", "description": f"No resource at {parsed.path}"}

        def _collection_route(self, path):
            rest = path[len(f"{STAC_PREFIX}/collections/{COLLECTION}"):]
            if not rest:
                return 200, double.rewrite(double.collection)
            item_id = rest.removeprefix("/items/")
            for item in double.items:
                if item["id"] == item_id:
                    return 200, double.rewrite(item)
            return 404, {"code": "NotFoundError", "description": f"No item {item_id}"}

        def _send(self, status, document, truncate=False, retry_after=None):
            payload = json.dumps(document).encode()
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "HEAD":  # headers only, or the connection's framing breaks
                return
            if truncate:  # announce the whole body, send half, hang up
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            double.send_body(self.wfile, urlparse(self.path).path, payload)

    return Handler


class SilentServer:
    """A loopback server that accepts every connection and never answers (nor closes it)."""

    def __init__(self):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self._connections = []
        self._stopping = threading.Event()
        self.accepted = 0

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._connections.append(connection)
            self.accepted += 1

    def stop(self):
        self._stopping.set()
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        for connection in self._connections:
            connection.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base(self):
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"


def closed_port():
    """A loopback port nothing listens on (bound, then closed): connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _parse_range(header, size):
    """'bytes=a-b' / 'bytes=a-' / 'bytes=-n' -> (start, end), or None for no/unsupported range."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].partition("-")
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(size - 1, int(last) if last else size - 1)
    return (start, end) if start <= end else None


def _query_params(query):
    return {key: values[-1] for key, values in parse_qs(query).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="slow mode: seconds before every answer")
    parser.add_argument("--rate", type=float, default=None, help="slow mode: body bytes per second")
    parser.add_argument("--slow-prefix", default="", help="slow mode: only for paths starting with this")
    arguments = parser.parse_args()
    with PlanetaryComputerDouble() as double:
        double.slow_down(arguments.delay, arguments.rate, arguments.slow_prefix)
        print(f"STAC API: {double.url}\nSAS token endpoint (PC_SDK_SAS_URL): {double.sas_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
