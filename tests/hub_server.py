"""A small, real, local Hugging Face Hub endpoint for tests (standard library only).

Point huggingface_hub at it with ``HF_ENDPOINT=hub.url``. huggingface_hub reads ``HF_ENDPOINT`` when it is
imported, so the client normally runs in a subprocess started with ``hub.env()``::

    with LocalHub(tmp_path / "hub") as hub:
        sha = hub.add_folder("org/model", folder)
        subprocess.run([sys.executable, "-c", script], env={**os.environ, **hub.env(tmp_path / "cache")})
        assert hub.files("org/model")["config.json"] == b"..."

What it speaks (model repos only, ids "org/name" or "name"; the endpoints huggingface_hub 2.4 uses):

- downloads (``hf_hub_download``, ``snapshot_download``, ``timm.create_model("hf-hub:...")``):
  ``GET /api/models/{repo}[/revision/{rev}]`` (repo info with ``sha`` and ``siblings``),
  ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``recursive``), ``POST /api/models/{repo}/paths-info/{rev}``,
  ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``Content-Length`` (and, for
  files the real Hub keeps in LFS such as ``*.safetensors``, ``X-Linked-Etag``/``X-Linked-Size`` = sha256/size,
  so the cache names those blobs by sha256 exactly as with huggingface.co), byte ranges for resumed downloads.
  Never ``X-Xet-Hash``: clients always take the plain HTTP path, even with hf_xet installed.
- uploads (``create_repo``, ``upload_folder``, ``upload_file``, ``create_commit``, ``delete_file``):
  ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``POST /api/models/{repo}/preupload/{rev}`` (always
  ``uploadMode: "regular"``, so neither LFS nor Xet transfers are needed, whatever the size; ``oid`` of the file
  already there lets the client skip unchanged files), ``POST /api/models/{repo}/commit/{rev}`` (NDJSON:
  ``header``, ``file`` with base64 content, ``lfsFile`` for content the hub already holds, ``deletedFile``,
  ``deletedFolder``; honours ``parentCommit``). Each commit is a new snapshot with a fresh 40-hex sha; the branch
  moves to it and older shas stay downloadable.
- ``POST /api/validate-yaml`` (any README.md metadata passes), ``GET /api/whoami-v2``. Any token, or none, is
  accepted.
- errors as huggingface_hub maps them: 404 + ``X-Error-Code: RepoNotFound`` (-> ``RepositoryNotFoundError``),
  ``RevisionNotFound`` (-> ``RevisionNotFoundError``), ``EntryNotFound`` (-> ``RemoteEntryNotFoundError``, an
  ``EntryNotFoundError``), 409 on an existing repo (``create_repo(exist_ok=True)`` passes), 412 on a stale
  ``parentCommit``.

State lives under ``root`` (blobs by sha256, one JSON file per commit, refs), so a hub reopened on the same root
serves the same repos. ``requests`` logs every (method, path) served, for assertions.

Not supported: datasets/spaces, pull requests, tags/branches other than those created by commits to "main", LFS and
Xet transfer protocols, pagination (listings come in one page).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_BRANCH = "main"
# Files the real Hub stores in LFS: the default .gitattributes of a new repo (by name), or anything >= 10 MiB.
LFS_PATTERNS = (
    *("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.mlmodel", "*.model"),
    *("*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth"),
    *("*.rar", "*.safetensors", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*"),
)
LFS_MIN_SIZE = 10 * 1024 * 1024
_API_ACTIONS = {"revision", "tree", "paths-info", "preupload", "commit", "resolve"}


class HubError(Exception):
    """An HTTP error answered the way huggingface.co answers it (status, X-Error-Code, message)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid / ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _is_lfs(path: str, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size >= LFS_MIN_SIZE or any(fnmatch.fnmatch(name, pattern) for pattern in LFS_PATTERNS)


def _check_repo_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}", "BadRequest")
    return path


class LocalHub:
    """A Hub endpoint on 127.0.0.1 serving model repos stored under ``root``; use as a context manager."""

    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._blob_meta: dict[str, tuple[int, str]] = {}  # sha256 -> (size, git sha1)
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def env(self, cache: Path | str | None = None, token: str = "dummy") -> dict[str, str]:
        """Environment for a client process: this endpoint, a dummy token, no proxy, no telemetry/progress bars."""
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
        env = {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": token,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": "",
            "HF_HUB_OFFLINE": "0",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }
        if cache is not None:
            env["HF_HUB_CACHE"] = str(cache)
            env["HF_HOME"] = str(Path(cache).parent / "hf_home")
        return env

    # -- test-side API -------------------------------------------------------------------------------------------

    def create_repo(self, repo_id: str, exist_ok: bool = True) -> None:
        with self._lock:
            if self.exists(repo_id):
                if exist_ok:
                    return
                raise HubError(409, "You already created this model repo", "RepoExists")
            self._write_commit(repo_id, None, {}, "initial commit", DEFAULT_BRANCH)

    def add_folder(self, repo_id: str, folder: Path | str, message: str = "Add folder", replace: bool = True) -> str:
        """Commit every file under ``folder`` to ``repo_id`` (created if needed); returns the new commit sha.

        With ``replace`` the snapshot holds exactly the folder's files, otherwise they are added to the current ones.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise NotADirectoryError(folder)
        with self._lock:
            self.create_repo(repo_id, exist_ok=True)
            parent = self.resolve(repo_id, DEFAULT_BRANCH)
            files = {} if replace else dict(self._commit(repo_id, parent)["files"])
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                files[path.relative_to(folder).as_posix()] = self._put_blob(path.read_bytes())
            return self._write_commit(repo_id, parent, files, message, DEFAULT_BRANCH)

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """The repo's files (path -> bytes) at a branch or commit sha."""
        with self._lock:
            commit = self._commit(repo_id, self.resolve(repo_id, revision))
            return {path: self._blob(sha256) for path, sha256 in commit["files"].items()}

    def exists(self, repo_id: str) -> bool:
        return (self._repo_dir(repo_id) / "refs.json").is_file()

    def resolve(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> str:
        """The commit sha a branch name or (full or >= 7-char) sha points to; HubError 404 if unknown."""
        with self._lock:
            if not self.exists(repo_id):
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            refs = self._refs(repo_id)
            if revision in refs:
                return refs[revision]
            if len(revision) >= 7 and all(c in "0123456789abcdef" for c in revision):
                matches = [p.stem for p in (self._repo_dir(repo_id) / "commits").glob(f"{revision}*.json")]
                if len(matches) == 1:
                    return matches[0]
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commits(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> list[str]:
        """Commit shas from ``revision`` back to the first commit (newest first)."""
        with self._lock:
            sha: str | None = self.resolve(repo_id, revision)
            history = []
            while sha is not None:
                history.append(sha)
                sha = self._commit(repo_id, sha)["parent"]
            return history

    # -- storage -------------------------------------------------------------------------------------------------

    def _repo_dir(self, repo_id: str) -> Path:
        parts = repo_id.split("/")
        if not 1 <= len(parts) <= 2 or any(not p or p in (".", "..") or p.startswith(".") for p in parts):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.root / "repos" / Path(*parts)

    def _refs(self, repo_id: str) -> dict[str, str]:
        return json.loads((self._repo_dir(repo_id) / "refs.json").read_text())

    def _commit(self, repo_id: str, sha: str) -> dict[str, Any]:
        return json.loads((self._repo_dir(repo_id) / "commits" / f"{sha}.json").read_text())

    def _put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        blob = self.root / "blobs" / sha256
        if not blob.exists():
            tmp = blob.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            tmp.replace(blob)
        self._blob_meta.setdefault(sha256, (len(data), git_blob_sha1(data)))
        return sha256

    def _blob(self, sha256: str) -> bytes:
        return (self.root / "blobs" / sha256).read_bytes()

    def _meta(self, sha256: str) -> tuple[int, str]:
        if sha256 not in self._blob_meta:
            data = self._blob(sha256)
            self._blob_meta[sha256] = (len(data), git_blob_sha1(data))
        return self._blob_meta[sha256]

    def _write_commit(self, repo_id: str, parent: str | None, files: dict[str, str], message: str, branch: str) -> str:
        seed = json.dumps([repo_id, parent, sorted(files.items()), message, uuid.uuid4().hex])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo = self._repo_dir(repo_id)
        (repo / "commits").mkdir(parents=True, exist_ok=True)
        record = {"sha": sha, "parent": parent, "message": message, "date": _now(), "files": files}
        (repo / "commits" / f"{sha}.json").write_text(json.dumps(record, indent=1))
        refs = self._refs(repo_id) if self.exists(repo_id) else {}
        refs[branch] = sha
        tmp = repo / f"refs.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(refs))
        tmp.replace(repo / "refs.json")
        return sha

    # -- Hub JSON shapes -----------------------------------------------------------------------------------------

    def _file_entry(self, path: str, sha256: str) -> dict[str, Any]:
        size, sha1 = self._meta(sha256)
        if _is_lfs(path, size):
            pointer = lfs_pointer(sha256, size)
            lfs = {"oid": sha256, "size": size, "pointerSize": len(pointer)}
            return {"type": "file", "oid": git_blob_sha1(pointer), "size": size, "path": path, "lfs": lfs}
        return {"type": "file", "oid": sha1, "size": size, "path": path}

    @staticmethod
    def _folder_entry(path: str, files: dict[str, str]) -> dict[str, Any]:
        inside = sorted((p, s) for p, s in files.items() if p.startswith(path + "/"))
        return {
            "type": "directory",
            "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(),
            "size": 0,
            "path": path,
        }

    def _tree(self, repo_id: str, sha: str, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        files = self._commit(repo_id, sha)["files"]
        if prefix and not any(p.startswith(prefix + "/") for p in files):
            raise HubError(404, f"{prefix} is not a folder on {sha}", "EntryNotFound", {"X-Repo-Commit": sha})
        base = prefix + "/" if prefix else ""
        folders: set[str] = set()
        entries: list[dict[str, Any]] = []
        for path in sorted(files):
            if not path.startswith(base):
                continue
            rest = path[len(base) :].split("/")
            for depth in range(1, len(rest) if recursive else min(len(rest), 2)):
                folders.add(base + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                entries.append(self._file_entry(path, files[path]))
        return [self._folder_entry(f, files) for f in sorted(folders)] + entries

    def _info(self, repo_id: str, sha: str, blobs: bool) -> dict[str, Any]:
        commit = self._commit(repo_id, sha)
        first = self._commit(repo_id, self.commits(repo_id, sha)[-1])
        siblings = []
        for path, sha256 in sorted(commit["files"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = self._file_entry(path, sha256)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    pointer_size = entry["lfs"]["pointerSize"]
                    sibling["lfs"] = {"sha256": sha256, "size": entry["size"], "pointerSize": pointer_size}
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": first["date"],
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }

    def _apply_commit(self, repo_id: str, revision: str, body: bytes, query: dict[str, list[str]]) -> dict[str, Any]:
        if query.get("create_pr", ["0"])[0] not in ("", "0", "false", "False"):
            raise HubError(400, "LocalHub does not support pull requests", "BadRequest")
        with self._lock:
            head = self.resolve(repo_id, revision)
            if revision not in self._refs(repo_id):
                raise HubError(400, f"Cannot commit to {revision}: not a branch", "BadRequest")
            files = dict(self._commit(repo_id, head)["files"])
            message = "Commit"
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item.get("key"), item.get("value", {})
                if key == "header":
                    message = value.get("summary") or message
                    parent = value.get("parentCommit")
                    if parent and not head.startswith(parent):
                        raise HubError(412, f"Parent commit {parent} is not the head of {revision} ({head})")
                elif key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}", "BadRequest")
                    files[_check_repo_path(value["path"])] = self._put_blob(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    oid = value["oid"]
                    if not (self.root / "blobs" / oid).is_file():
                        raise HubError(400, f"LFS object {oid} was never uploaded (LocalHub has no LFS API)")
                    files[_check_repo_path(value["path"])] = oid
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
                    for path in doomed:
                        del files[path]
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}", "BadRequest")
            sha = self._write_commit(repo_id, head, files, message, revision)
        return {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self.url}/{repo_id}/commit/{sha}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    # -- routing -------------------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(raw_path)
        query = parse_qs(split.query, keep_blank_values=True)
        segments = [unquote(s) for s in split.path.strip("/").split("/")] if split.path.strip("/") else []
        with self._lock:  # one request at a time: simple and plenty fast for tests
            self.requests.append((method, unquote(split.path)))
            try:
                return self._route(method, segments, query, headers, body)
            except HubError as error:
                return self._error(error)

    def _route(self, method: str, segments: list[str], query: dict[str, list[str]], headers: Any, body: bytes):
        if segments[:1] == ["api"]:
            return self._api(method, segments[1:], query, body)
        if method in ("GET", "HEAD"):
            for n in (2, 1):
                if len(segments) > n + 2 and segments[n] == "resolve":
                    repo_id, revision, path = "/".join(segments[:n]), segments[n + 1], "/".join(segments[n + 2 :])
                    return self._resolve(method, repo_id, revision, path, headers.get("Range"))
        raise HubError(404, f"Not found: /{'/'.join(segments)}")

    def _error(self, error: HubError) -> tuple[int, dict[str, str], bytes]:
        out = {"Content-Type": "application/json", "X-Error-Message": error.message, **error.headers}
        if error.code:
            out["X-Error-Code"] = error.code
        return error.status, out, json.dumps({"error": error.message}).encode()

    @staticmethod
    def _json(payload: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _api(self, method: str, rest: list[str], query: dict[str, list[str]], body: bytes):
        if rest == ["whoami-v2"]:
            token = {"accessToken": {"displayName": "dummy", "role": "write"}, "type": "access_token"}
            return self._json(
                {"type": "user", "name": "local-user", "fullname": "Local User", "orgs": [], "auth": token}
            )
        if rest == ["validate-yaml"] and method == "POST":  # README.md metadata check before a commit: accept it
            return self._json({"errors": [], "warnings": []})
        if rest[:2] == ["repos", "create"] and method == "POST":
            payload = json.loads(body or b"{}")
            if payload.get("type", "model") not in (None, "model"):
                raise HubError(400, "LocalHub only serves model repos", "BadRequest")
            repo_id = "/".join(filter(None, [payload.get("organization"), payload["name"]]))
            self._repo_dir(repo_id)  # validates the id
            if self.exists(repo_id):
                return self._json({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}, 409)
            self.create_repo(repo_id)
            return self._json({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})
        if rest[:2] == ["repos", "delete"] and method == "DELETE":
            payload = json.loads(body or b"{}")
            repo_id = "/".join(filter(None, [payload.get("organization"), payload["name"]]))
            with self._lock:
                self.resolve(repo_id)
                (self._repo_dir(repo_id) / "refs.json").unlink()
            return self._json({})
        if not rest or rest[0] != "models" or len(rest) < 2:
            raise HubError(404, f"Not found: /api/{'/'.join(rest)}")
        rest = rest[1:]
        n = 2 if len(rest) > 2 and rest[2] in _API_ACTIONS else 1 if len(rest) > 1 and rest[1] in _API_ACTIONS else 0
        if n == 0:  # GET /api/models/{repo}: info at the default branch
            if method != "GET":
                raise HubError(405, "Method not allowed")
            repo_id = "/".join(rest)
            return self._json(self._info(repo_id, self.resolve(repo_id), bool(query.get("blobs"))))
        repo_id, action, args = "/".join(rest[:n]), rest[n], rest[n + 1 :]
        revision = args[0] if args else DEFAULT_BRANCH
        if action == "revision" and method == "GET":
            return self._json(self._info(repo_id, self.resolve(repo_id, revision), bool(query.get("blobs"))))
        if action == "tree" and method == "GET":
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            sha = self.resolve(repo_id, revision)
            return self._json(self._tree(repo_id, sha, "/".join(args[1:]).strip("/"), recursive))
        if action == "paths-info" and method == "POST":
            sha = self.resolve(repo_id, revision)
            if body.lstrip().startswith(b"{"):
                paths = json.loads(body).get("paths", [])
            else:
                paths = parse_qs(body.decode(), keep_blank_values=True).get("paths", [])
            files = self._commit(repo_id, sha)["files"]
            out = []
            for path in paths:
                path = path.strip("/")
                if path in files:
                    out.append(self._file_entry(path, files[path]))
                elif any(p.startswith(path + "/") for p in files):
                    out.append(self._folder_entry(path, files))
            return self._json(out)
        if action == "preupload" and method == "POST":
            sha = self.resolve(repo_id, revision)
            files = self._commit(repo_id, sha)["files"]
            answers = []
            for item in json.loads(body)["files"]:
                existing = files.get(item["path"])
                oid = self._meta(existing)[1] if existing else None
                answers.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
            return self._json({"files": answers, "commitOid": sha})
        if action == "commit" and method == "POST":
            return self._json(self._apply_commit(repo_id, revision, body, query))
        raise HubError(404, f"Not found: {method} /api/models/{'/'.join(rest)}")

    def _resolve(self, method: str, repo_id: str, revision: str, path: str, range_header: str | None):
        with self._lock:
            sha = self.resolve(repo_id, revision)
            files = self._commit(repo_id, sha)["files"]
            if path not in files:
                raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound", {"X-Repo-Commit": sha})
            sha256 = files[path]
            entry = self._file_entry(path, sha256)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": sha,
            "ETag": f'"{entry["oid"]}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(entry["size"])})
        data = self._blob(sha256) if method == "GET" else b""
        size = entry["size"]
        if method == "GET" and range_header and range_header.startswith("bytes="):
            first, _, last = range_header[len("bytes=") :].split(",")[0].partition("-")
            start = int(first) if first else max(size - int(last), 0)
            end = int(last) if first and last else size - 1
            end = min(end, size - 1)
            if start > end:
                return 416, {**headers, "Content-Range": f"bytes */{size}"}, b""
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return 206, headers, data[start : end + 1]
        headers["Content-Length"] = str(size)  # also for HEAD, where no body follows
        return 200, headers, data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr log (``LocalHub.requests`` records them)."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._body()
        hub: LocalHub = self.server.hub  # type: ignore[attr-defined]
        try:
            status, headers, payload = hub.handle(self.command, self.path, self.headers, body)
        except Exception as error:  # a bug in the fake hub: answer 500 rather than dropping the connection
            status, headers, payload = 500, {"Content-Type": "text/plain"}, repr(error).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815


@pytest.fixture
def local_hub(tmp_path) -> Iterator[LocalHub]:
    """A running LocalHub storing its repos in tmp_path/"hub". To share it: in tests/conftest.py,
    ``from tests.hub_server import local_hub  # noqa: F401``."""
    with LocalHub(tmp_path / "hub") as hub:
        yield hub
