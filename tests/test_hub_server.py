"""LocalHub (tests/hub_server.py) against the real clients: huggingface_hub and timm, no internet.

huggingface_hub reads HF_ENDPOINT at import, so every client runs in a fresh interpreter pointed at the local hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import hub_server
from tests.hub_server import LocalHub, git_blob_sha1

local_hub = hub_server.local_hub  # the fixture under test (tests/conftest.py may import it for every module)
ROOT = Path(__file__).resolve().parent.parent
REPO = "cxr-test/hub-server"


def run_client(hub: LocalHub, tmp_path: Path, script: str, *args: str, **env: str) -> dict:
    """Run ``script`` in a fresh interpreter pointed at ``hub``; it prints one JSON object last."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full_env = {**clean, **hub.env(tmp_path / "cache"), **env}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"client failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def tree_bytes(folder: Path | str) -> dict[str, bytes]:
    """Every file under ``folder`` (following the cache's symlinks), by posix path; huggingface_hub's .cache skipped."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    }


def make_folder(folder: Path, weights_size: int) -> Path:
    (folder / "sub" / "dir").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1}))
    (folder / "model.safetensors").write_bytes(random.Random(0).randbytes(weights_size))
    (folder / "sub" / "readme.md").write_text("# notes\n")
    (folder / "README.md").write_text("---\nlicense: mit\nlibrary_name: timm\n---\n# A tiny test model\n")
    (folder / "sub" / "dir" / "labels.txt").write_text("NORMAL\nPNEUMONIA\n")
    return folder


def test_download_file_and_snapshots(local_hub: LocalHub, tmp_path):
    source = make_folder(tmp_path / "src", 300_000)
    sha = local_hub.add_folder(REPO, source)
    assert local_hub.files(REPO) == local_hub.files(REPO, sha) == tree_bytes(source)

    out = run_client(
        local_hub,
        tmp_path,
        """
        import json, sys
        from huggingface_hub import hf_hub_download, snapshot_download
        repo, sha, other_cache = sys.argv[1:]
        print(json.dumps({
            "file": hf_hub_download(repo, "sub/dir/labels.txt"),
            "pinned": hf_hub_download(repo, "model.safetensors", revision=sha),
            "snapshot": snapshot_download(repo),
            "subset": snapshot_download(repo, allow_patterns=["sub/*"], cache_dir=other_cache),
        }))
        """,
        REPO,
        sha,
        str(tmp_path / "other-cache"),
    )
    assert Path(out["file"]).read_bytes() == (source / "sub" / "dir" / "labels.txt").read_bytes()
    assert Path(out["pinned"]).read_bytes() == (source / "model.safetensors").read_bytes()
    assert Path(out["snapshot"]).name == sha
    assert tree_bytes(out["snapshot"]) == tree_bytes(source)
    assert tree_bytes(out["subset"]) == {k: v for k, v in tree_bytes(source).items() if k.startswith("sub/")}

    # The cache is laid out as huggingface.co leaves it: blobs named by git sha1, or sha256 for LFS-type files.
    blobs = {p.name for p in (tmp_path / "cache" / f"models--{REPO.replace('/', '--')}" / "blobs").iterdir()}
    assert hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest() in blobs
    assert git_blob_sha1((source / "config.json").read_bytes()) in blobs
    assert ("HEAD", f"/{REPO}/resolve/main/sub/dir/labels.txt") in local_hub.requests
    assert ("GET", f"/api/models/{REPO}/revision/main") in local_hub.requests


def test_state_survives_a_restart_and_short_shas_resolve(tmp_path):
    source = make_folder(tmp_path / "src", 1000)
    with LocalHub(tmp_path / "hub") as hub:
        sha = hub.add_folder(REPO, source)
    with LocalHub(tmp_path / "hub") as reopened:
        assert reopened.resolve(REPO) == reopened.resolve(REPO, sha[:7]) == sha
        assert reopened.files(REPO) == tree_bytes(source)


XET_MODES = ["hf_xet pipeline", "legacy create_commit"] if importlib.util.find_spec("hf_xet") else ["legacy"]


@pytest.mark.parametrize("mode", XET_MODES)
def test_upload_folder_then_download(local_hub: LocalHub, tmp_path, mode):
    """A 7 MB weights file goes through preupload ("regular") + commit, whichever upload path the client takes."""
    source = make_folder(tmp_path / "src", 7 * 1024 * 1024)
    out = run_client(
        local_hub,
        tmp_path,
        """
        import json, sys
        from huggingface_hub import HfApi, snapshot_download
        repo, folder = sys.argv[1:]
        api = HfApi()
        url = api.create_repo(repo, exist_ok=True)
        api.create_repo(repo, exist_ok=True)  # already there: fine
        first = api.upload_folder(folder_path=folder, repo_id=repo)
        again = api.upload_folder(folder_path=folder, repo_id=repo)  # nothing changed: no new commit
        print(json.dumps({"url": str(url), "repo_id": url.repo_id, "first": first.oid, "again": again.oid,
                          "commit_url": first.commit_url, "snapshot": snapshot_download(repo)}))
        """,
        REPO,
        str(source),
        **({"HF_HUB_DISABLE_XET": "1"} if mode.startswith("legacy") else {}),
    )
    assert out["repo_id"] == REPO and out["url"] == f"{local_hub.url}/{REPO}"
    assert out["first"] == out["again"] == local_hub.resolve(REPO)
    assert out["commit_url"] == f"{local_hub.url}/{REPO}/commit/{out['first']}"
    assert len(local_hub.commits(REPO)) == 2  # the repo's initial (empty) commit, then the upload
    assert local_hub.files(REPO) == tree_bytes(source)
    assert Path(out["snapshot"]).name == out["first"]
    assert tree_bytes(out["snapshot"]) == tree_bytes(source)
    posts = [path for method, path in local_hub.requests if method == "POST"]
    assert posts.count(f"/api/models/{REPO}/commit/main") == 1
    assert f"/api/models/{REPO}/preupload/main" in posts
    assert "/api/validate-yaml" in posts  # README.md metadata is checked before the commit


def test_each_commit_is_a_snapshot(local_hub: LocalHub, tmp_path):
    first = local_hub.add_folder(REPO, make_folder(tmp_path / "src", 1000))
    out = run_client(
        local_hub,
        tmp_path,
        """
        import json, sys
        from huggingface_hub import HfApi, hf_hub_download
        repo, first = sys.argv[1:]
        api = HfApi()
        api.upload_file(path_or_fileobj=b'{"num_classes": 2}', path_in_repo="config.json", repo_id=repo)
        second = api.delete_file("sub/readme.md", repo_id=repo).oid
        try:  # the branch has moved on since `first`
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, parent_commit=first)
            stale = None
        except Exception as e:
            stale = [type(e).__name__, e.response.status_code]
        print(json.dumps({
            "second": second,
            "stale": stale,
            "new": open(hf_hub_download(repo, "config.json")).read(),
            "old": open(hf_hub_download(repo, "config.json", revision=first)).read(),
        }))
        """,
        REPO,
        first,
    )
    assert json.loads(out["new"]) == {"num_classes": 2}
    assert json.loads(out["old"]) == {"architecture": "resnet18", "num_classes": 1}
    assert out["stale"] == ["HfHubHTTPError", 412]
    assert local_hub.resolve(REPO) == out["second"] == local_hub.commits(REPO)[0]
    assert "sub/readme.md" in local_hub.files(REPO, first) and "sub/readme.md" not in local_hub.files(REPO)


def test_missing_repo_file_and_revision_raise_hub_errors(local_hub: LocalHub, tmp_path):
    local_hub.add_folder(REPO, make_folder(tmp_path / "src", 1000))
    out = run_client(
        local_hub,
        tmp_path,
        """
        import json, sys
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        from huggingface_hub.errors import EntryNotFoundError
        repo = sys.argv[1]
        def error(call):
            try:
                call()
            except Exception as e:
                return [type(e).__name__, isinstance(e, EntryNotFoundError)]
        api = HfApi()
        print(json.dumps({
            "repo": error(lambda: hf_hub_download("cxr-test/nope", "config.json")),
            "snapshot": error(lambda: snapshot_download("cxr-test/nope")),
            "file": error(lambda: hf_hub_download(repo, "nope.json")),
            "revision": error(lambda: hf_hub_download(repo, "config.json", revision="v9")),
            "exists": [api.repo_exists(repo), api.repo_exists("cxr-test/nope"),
                       api.file_exists(repo, "sub/readme.md"), api.file_exists(repo, "nope.json")],
        }))
        """,
        REPO,
    )
    assert out["repo"] == ["RepositoryNotFoundError", False]
    assert out["snapshot"] == ["RepositoryNotFoundError", False]
    assert out["file"] == ["RemoteEntryNotFoundError", True]
    assert out["revision"] == ["RevisionNotFoundError", False]
    assert out["exists"] == [True, False, True, False]


@pytest.mark.slow  # imports torch and timm in a fresh interpreter: ~10 s on a busy 2-core box
def test_timm_loads_a_model_served_by_the_hub(local_hub: LocalHub, tmp_path):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=1).eval()
    save_for_hf(model, tmp_path / "export", safe_serialization=True)
    local_hub.add_folder(REPO, tmp_path / "export")
    probe = "torch.linspace(-2, 2, 3 * 64 * 64).reshape(1, 3, 64, 64)"
    with torch.no_grad():
        expected = model(eval(probe)).flatten().tolist()

    out = run_client(
        local_hub,
        tmp_path,
        f"""
        import json, sys, torch, timm
        model = timm.create_model("hf-hub:" + sys.argv[1], pretrained=True).eval()
        with torch.no_grad():
            print(json.dumps({{"out": model({probe}).flatten().tolist()}}))
        """,
        REPO,
    )
    assert out["out"] == expected
    fetched = [path.rsplit("/", 1)[-1] for method, path in local_hub.requests if method == "GET"]
    assert fetched == ["config.json", "model.safetensors"]
