"""A Git server over smart HTTP with Basic auth, on loopback: ``git http-backend`` as CGI.

What a hosted GitOps repository does to a release step: it refuses anonymous pushes with
401 and accepts a token as the password. ``git http-backend`` (git's own CGI program) does
the protocol; this server only checks the credentials and relays the CGI exchange.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.support.http_server import serving


@dataclass
class GitHttp:
    url: str
    """The repository's URL (``http://127.0.0.1:<port>/gitops.git``)."""
    bare: Path
    refused: int = 0


def _body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    chunks = []
    while size := int(handler.rfile.readline().split(b";")[0].strip(), 16):
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()
    handler.rfile.readline()
    return b"".join(chunks)


def _handler(server: GitHttp, user: str, password: str) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            body = _body(self)
            if self.headers.get("Authorization") != expected:
                server.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="gitops"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            url = urllib.parse.urlsplit(self.path)
            env = {
                "PATH": os.environ["PATH"],
                "GIT_PROJECT_ROOT": str(server.bare.parent),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": user,  # http-backend allows receive-pack for a known user
                "REMOTE_ADDR": "127.0.0.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": url.path,
                "QUERY_STRING": url.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in self.headers.items()},
            }
            result = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            sep = b"\r\n\r\n" if b"\r\n\r\n" in result.stdout else b"\n\n"
            head, _, payload = result.stdout.partition(sep)
            status, headers = 200, []
            for line in head.decode().splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

    return Handler


@contextlib.contextmanager
def git_http(tmp: Path, *, user: str, password: str) -> Iterator[GitHttp]:
    """An empty bare repository served with Basic auth; stopped on exit."""
    bare = tmp / "served" / "gitops.git"
    bare.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
    state = GitHttp(url="", bare=bare)
    with serving(_handler(state, user, password)) as url:
        state.url = f"{url}/gitops.git"
        yield state
