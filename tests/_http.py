"""A local HTTP server for the storage tests (and bench_shards.py's far-off server): byte ranges,
ETags, directory pages and failures on demand."""
import contextlib
import html
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class RangeHandler(BaseHTTPRequestHandler):
    """Files under server.root with Range support and an ETag and Last-Modified (as nginx sends
    them); a directory is a page of percent-encoded links (as Python's http.server writes it).
    The next server.fail[path] GETs and server.fail_head[path] HEADs of a path answer 500; its
    next server.slow[path] requests wait server.slow_s seconds first; its next server.stall[path]
    GETs send half the body and then nothing until the server closes (a stalled connection);
    every file GET waits server.latency seconds (a server some way off), and server.peak is the
    most file GETs that waited at once."""

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body):
        srv = self.server
        path = urllib.parse.unquote(self.path.split("?")[0])
        with srv.lock:
            srv.requests.append((self.command, path, self.headers.get("Range")))
            fail = srv.fail if body else srv.fail_head
            failing = fail.get(path, 0) > 0
            if failing:
                fail[path] -= 1
            slow = srv.slow.get(path, 0) > 0
            if slow:
                srv.slow[path] -= 1
            stall = body and srv.stall.get(path, 0) > 0
            if stall:
                srv.stall[path] -= 1
        if slow:
            time.sleep(srv.slow_s)
        if failing:
            self.send_error(500, "injected failure")
            return
        full = os.path.join(srv.root, path.lstrip("/"))
        if os.path.isdir(full):
            self._listing(path, full, body)
            return
        if not os.path.isfile(full):
            self.send_error(404)
            return
        if body:
            with srv.lock:
                srv.active += 1
                srv.peak = max(srv.peak, srv.active)
            try:
                time.sleep(srv.latency)
            finally:
                with srv.lock:
                    srv.active -= 1
        with open(full, "rb") as f:
            data = f.read()
            st = os.fstat(f.fileno())
        total, status, rng = len(data), 200, self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m:
            a, b = int(m.group(1)), int(m.group(2)) if m.group(2) else total - 1
            data, status = data[a:b + 1], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        if srv.etag:   # Python's own http.server sends none: a file is known by Last-Modified alone
            self.send_header("ETag", f'"{st.st_mtime_ns:x}-{st.st_size:x}"')
        self.send_header("Last-Modified", self.date_time_string(st.st_mtime))
        if status == 206:
            self.send_header("Content-Range", f"bytes {a}-{a + len(data) - 1}/{total}")
        self.end_headers()
        if stall:
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            srv.closing.wait(120)   # ... and the rest never comes
        elif body:
            self.wfile.write(data)

    def _listing(self, path, full, body):
        base = path.rstrip("/") + "/"
        links = "".join(f'<li><a href="{urllib.parse.quote(base + n)}{"/" * os.path.isdir(os.path.join(full, n))}">'
                        f"{html.escape(n)}</a></li>\n" for n in sorted(os.listdir(full)))
        data = f"<html><body><ul>\n{links}</ul></body></html>\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):   # a client that timed out and left
            pass


class Server(ThreadingHTTPServer):
    request_queue_size = 128   # socketserver's 5 drops the connections of a reader with many ranges in flight


@contextlib.contextmanager
def serve(root):
    """A server of the files under ``root`` on loopback, at ``server.url``, for the ``with`` block; the
    test is skipped where fastload cannot read http:// URLs (fsspec and aiohttp: fastload[remote])."""
    for client in ("fsspec", "aiohttp"):
        pytest.importorskip(client)
    server = Server(("127.0.0.1", 0), RangeHandler)
    server.daemon_threads = True
    server.root, server.requests, server.fail, server.lock = str(root), [], {}, threading.Lock()
    server.fail_head, server.slow, server.slow_s, server.latency = {}, {}, 0.0, 0.0
    server.stall, server.closing, server.etag = {}, threading.Event(), True
    server.active = server.peak = 0
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
