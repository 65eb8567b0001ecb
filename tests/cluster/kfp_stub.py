"""A Kubeflow Pipelines API stand-in on loopback: answers the v2beta1 calls kfp.Client makes for
upload + run / recurring run, and records every request (method, path, query, body) for the tests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]

    def json(self):
        return json.loads(self.body)


def _listed(kind: str, ids: dict[str, str], req: Recorded) -> dict:
    """A list call (`kind`: pipelines or experiments) filtered by display name, as kfp.Client asks for
    one: the match, or an empty answer when there is none."""
    flt = json.loads(req.query.get("filter", ["{}"])[0] or "{}")
    name = next((x.get("string_value") or x.get("stringValue") for x in flt.get("predicates", [])), None)
    if name not in ids:
        return {}
    return {kind: [{f"{kind[:-1]}_id": ids[name], "display_name": name}], "total_size": 1}


@dataclass
class KfpStub:
    requests: list[Recorded] = field(default_factory=list)
    pipelines: dict[str, str] = field(default_factory=dict)  # display name -> id
    experiments: dict[str, str] = field(default_factory=dict)

    def find(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def answer(self, req: Recorded) -> tuple[int, dict]:
        p = req.path
        if p == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if p == "/apis/v2beta1/pipelines" and req.method == "GET":
            return 200, _listed("pipelines", self.pipelines, req)
        if p == "/apis/v2beta1/pipelines/upload":
            name = req.query["name"][0]
            self.pipelines[name] = f"pipeline-{len(self.pipelines) + 1}"
            return 200, {"pipeline_id": self.pipelines[name], "display_name": name}
        if p == "/apis/v2beta1/pipelines/upload_version":
            n = len(self.find("POST", p))
            return 200, {
                "pipeline_id": req.query["pipelineid"][0],
                "pipeline_version_id": f"version-{n}",
                "display_name": req.query["name"][0],
            }
        if p == "/apis/v2beta1/experiments" and req.method == "GET":
            return 200, _listed("experiments", self.experiments, req)
        if p == "/apis/v2beta1/experiments" and req.method == "POST":
            name = req.json()["display_name"]
            self.experiments[name] = f"experiment-{len(self.experiments) + 1}"
            return 200, {"experiment_id": self.experiments[name], "display_name": name}
        if p == "/apis/v2beta1/runs" and req.method == "POST":
            return 200, {**req.json(), "run_id": "run-42", "state": "PENDING"}
        if p == "/apis/v2beta1/recurringruns" and req.method == "POST":
            return 200, {**req.json(), "recurring_run_id": "recurring-7", "status": "ENABLED"}
        return 404, {"error": f"stub: no route {req.method} {p}"}


def serve(stub: KfpStub) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Recorded(
                self.command,
                url.path,
                parse_qs(url.query),
                self.rfile.read(length) if length else b"",
                {k.lower(): v for k, v in self.headers.items()},
            )
            stub.requests.append(req)
            status, payload = stub.answer(req)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
