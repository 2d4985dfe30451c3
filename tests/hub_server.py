"""A model hub on 127.0.0.1 that speaks the part of the Hugging Face Hub API the real `huggingface_hub`
client uses to create a repo, commit files (regular uploads), list files and download them.

Repos live in memory: {repo_id: {"private": bool, "branches": {name: {"sha": commit, "files": {path: bytes}}}}}.
Every request is recorded in `server.requests` (method, path, whether it carried a token).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


class HubState:
    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self.commits = 0
        self.drop_commits = 0  # this many commit requests are cut off: half the body read, then the socket closed
        self.lock = threading.Lock()

    def new_sha(self) -> str:
        self.commits += 1
        return hashlib.sha1(f"commit-{self.commits}".encode()).hexdigest()


class Handler(BaseHTTPRequestHandler):
    state: HubState  # set on the subclass made by serve()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # ---------------------------------------------------------------------------------------------
    def send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload, headers: dict | None = None):
        self.send(status, json.dumps(payload).encode(), headers)

    def error(self, status: int, code: str, message: str):
        self.send_json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding") == "chunked":
            chunks = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return chunks
                chunks += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def record(self):
        token = (self.headers.get("Authorization") or "").startswith("Bearer ")
        self.state.requests.append((self.command, urlparse(self.path).path, token))

    def branch(self, repo_id: str, revision: str):
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self.error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        revision = unquote(revision)
        if revision in repo["branches"]:
            return repo["branches"][revision]
        for branch in repo["branches"].values():  # a commit sha
            if branch["sha"] == revision:
                return branch
        self.error(404, "RevisionNotFound", f"Revision {revision} not found")
        return None

    # ---------------------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.record()
        parsed = urlparse(self.path)
        parts = [p for p in parsed.path.split("/") if p]
        with self.state.lock:
            # /api/models/{ns}/{name}[/revision/{rev}] -> model info
            if parts[:2] == ["api", "models"] and (len(parts) == 4 or (len(parts) == 6 and parts[4] == "revision")):
                repo_id = "/".join(parts[2:4])
                branch = self.branch(repo_id, parts[5] if len(parts) == 6 else "main")
                if branch is None:
                    return
                self.send_json(200, {"id": repo_id, "modelId": repo_id, "sha": branch["sha"],
                                     "private": self.state.repos[repo_id]["private"], "tags": [],
                                     "siblings": [{"rfilename": p} for p in sorted(branch["files"])]})
                return
            # /api/models/{ns}/{name}/tree/{rev}[/{path}] -> file listing
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
                repo_id = "/".join(parts[2:4])
                branch = self.branch(repo_id, parts[5])
                if branch is None:
                    return
                prefix = "/".join(parts[6:])
                entries = [
                    {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for p, data in sorted(branch["files"].items()) if p.startswith(prefix)
                ]
                self.send_json(200, entries)
                return
            # /{ns}/{name}/resolve/{rev}/{path} -> file download
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id = "/".join(parts[:2])
                branch = self.branch(repo_id, parts[3])
                if branch is None:
                    return
                path = unquote("/".join(parts[4:]))
                if path not in branch["files"]:
                    self.error(404, "EntryNotFound", f"{path} does not exist in {repo_id}")
                    return
                data = branch["files"][path]
                etag = hashlib.sha256(data).hexdigest()
                self.send(200, data, {"X-Repo-Commit": branch["sha"], "ETag": f'"{etag}"'},
                          content_type="application/octet-stream")
                return
        self.error(404, "NotFound", f"GET {parsed.path} is not served by the test hub")

    def do_POST(self):
        self.record()
        parsed = urlparse(self.path)
        parts = [p for p in parsed.path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit" and self.state.drop_commits:
            self.state.drop_commits -= 1
            self.rfile.read(int(self.headers.get("Content-Length") or 0) // 2)  # the server goes away mid-upload
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = self.body()
        with self.state.lock:
            if parts == ["api", "validate-yaml"]:
                errors = validate_card(json.loads(payload)["content"])
                if errors:
                    self.send_json(400, {"errors": [{"message": e} for e in errors]})
                else:
                    self.send_json(200, {"warnings": []})
                return
            if parts == ["api", "repos", "create"]:
                request = json.loads(payload)
                repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
                if repo_id in self.state.repos:  # as the Hub answers: the error and the repo's url
                    self.send_json(409, {"error": "You already created this model repo",
                                         "url": f"http://{self.headers['Host']}/{repo_id}"})
                    return
                sha = self.state.new_sha()
                private = request.get("visibility") == "private" or bool(request.get("private"))
                self.state.repos[repo_id] = {"private": private,
                                             "branches": {"main": {"sha": sha, "files": {}}}}
                self.send_json(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})
                return
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
                files = json.loads(payload)["files"]
                self.send_json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
                return
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
                repo_id = "/".join(parts[2:4])
                branch = self.branch(repo_id, unquote("/".join(parts[5:])))
                if branch is None:
                    return
                for line in payload.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        branch["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        branch["files"].pop(item["value"]["path"], None)
                    elif item["key"] != "header":
                        self.error(400, "BadRequest", f"unsupported commit operation {item['key']}")
                        return
                branch["sha"] = self.state.new_sha()
                host = self.headers["Host"]
                self.send_json(200, {"commitUrl": f"http://{host}/{repo_id}/commit/{branch['sha']}",
                                     "commitOid": branch["sha"], "success": True})
                return
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "branch":
                repo_id = "/".join(parts[2:4])
                repo = self.state.repos.get(repo_id)
                if repo is None:
                    self.error(404, "RepoNotFound", f"Repository {repo_id} not found")
                    return
                name = unquote("/".join(parts[5:]))
                if name in repo["branches"]:
                    self.error(409, "BranchExists", f"Branch {name} already exists")
                    return
                main = repo["branches"]["main"]
                repo["branches"][name] = {"sha": main["sha"], "files": dict(main["files"])}
                self.send_json(200, {})
                return
        self.error(404, "NotFound", f"POST {parsed.path} is not served by the test hub")


PIPELINE_TAGS = {"text-generation", "translation", "summarization", "text-classification", "text2text-generation"}


def validate_card(content: str) -> list[str]:
    """The Hub's metadata checks that matter here: YAML front matter, field types, a parseable model-index."""
    import yaml
    from huggingface_hub.repocard_data import model_index_to_eval_results

    if not content.startswith("---\n") or "\n---\n" not in content[4:]:
        return ["README.md has no YAML metadata block"]
    try:
        data = yaml.safe_load(content[4 : content.index("\n---\n", 4)])
    except yaml.YAMLError as error:
        return [f"metadata is not valid YAML: {error}"]
    if not isinstance(data, dict):
        return ["metadata must be a mapping"]
    errors = []
    for key in ("library_name", "pipeline_tag", "license"):
        if key in data and not isinstance(data[key], str):
            errors.append(f"{key} must be a string")
    if data.get("pipeline_tag") not in (None, *PIPELINE_TAGS):
        errors.append(f"unknown pipeline_tag {data['pipeline_tag']!r}")
    for key in ("tags", "datasets", "metrics"):
        if key in data and not (isinstance(data[key], list) and all(isinstance(v, str) for v in data[key])):
            errors.append(f"{key} must be a list of strings")
    if "model-index" in data:
        try:
            name, results = model_index_to_eval_results(data["model-index"])
            if not name or not results or any(not isinstance(r.metric_value, (int, float)) for r in results):
                errors.append("model-index needs a name and numeric results")
        except (KeyError, TypeError, ValueError) as error:
            errors.append(f"model-index is malformed: {error!r}")
    return errors


class LocalHub:
    """`with LocalHub() as hub:` -> hub.endpoint, hub.state; serves until the block ends."""

    def __enter__(self):
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.state.repos[repo_id]["branches"][branch]["files"]


def query(path: str) -> dict:
    return parse_qs(urlparse(path).query)
