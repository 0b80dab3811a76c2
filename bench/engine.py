"""Engine speed on this machine: load, prefill and decode rates, and the pipeline-like workload.

    python bench/engine.py                          # the default model, qwen2.5-coder-0.5b
    python bench/engine.py --model smollm2-135m --repeat 1
    python bench/engine.py --cold                   # also time the first-use conversion (fresh cache)

The pipeline-like workload is four model calls that share one ~1,000-token schema, shaped like ROUTE's
stages for one Spider question: (1) schema linking and a pseudo-SQL together, (2) SQL generation,
(3) noise correction of a candidate SQL, (4) continuation of a truncated SQL. "naive" runs each request
as its own transformers `generate` call on the full prompt; "engine" is routesh's TransformersEngine
(shared-prefix KV reuse, batching, prompt lookup for the copying stages). Both run side by side in one
process, alternating, and the medians are compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402
from routesh.engine import ChatRequest, GenerationParams, load_engine  # noqa: E402
from routesh.engine.hf import TransformersEngine  # noqa: E402
from routesh.engine.models import materialize  # noqa: E402

SPIDER_DB = "college_2"
QUESTION = "What are the names of instructors in the Comp. Sci. department who earn more than 80000?"
CANDIDATE = ("SELECT name FROM instructor WHERE dept_name = 'Comp. Sci.' AND salary > 80000")
FEEDBACK = "The query ran and returned 3 rows: ('Katz',), ('Brandt',), ('Bourrier',)."


def schema_text(token_budget_chars: int = 4200) -> str:
    """A real Spider schema as CREATE TABLE statements with two sample rows each (~1,000 tokens)."""
    from routesh.db.sqlite import SqliteDatabase
    from routesh.evaluate.datasets import data_dir

    db = SqliteDatabase.open(data_dir() / "spider" / "database" / SPIDER_DB / f"{SPIDER_DB}.sqlite")
    lines = []
    for table in db.introspect(samples=2).tables:
        cols = ", ".join(f"{c.name} {c.type}" + (" PRIMARY KEY" if c.primary_key and len(table.primary_key) == 1 else "")
                         for c in table.columns)
        fks = "".join(f", FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES {fk.ref_table}({', '.join(fk.ref_columns)})"
                      for fk in table.foreign_keys)
        lines.append(f"CREATE TABLE {table.name} ({cols}{fks});")
        samples = "; ".join(f"{c.name}: {', '.join(map(repr, c.samples))}" for c in table.columns if c.samples)
        lines.append(f"-- examples: {samples}")
    db.close()
    return ("You are a SQLite expert. Database schema:\n" + "\n".join(lines))[:token_budget_chars]


def pipeline_calls(schema: str, pseudo_sql: str = CANDIDATE) -> list[tuple[list[ChatRequest], GenerationParams]]:
    """The four calls. Later stages get the SQL they are likely to repeat as draft text, as the pipeline
    passes it (generation: the pseudo-SQL; noise correction and continuation: the candidate)."""
    def req(task: str) -> ChatRequest:
        return ChatRequest.of(("system", schema), ("user", task))

    sql_stop = (";", "\n\n", "```\n")
    return [
        ([req(f"Question: {QUESTION}\nWhich tables and columns does the answer need? Reply with one line of JSON "
              'like {"table": ["column", ...]} and nothing else.'),
          req(f"Question: {QUESTION}\nWrite one SQLite query. SQL only.")],
         GenerationParams(max_new_tokens=64, stop=("\n",) + sql_stop)),
        ([req(f"Question: {QUESTION}\nRelevant: instructor(name, dept_name, salary)\nWrite one SQLite query. SQL only.")],
         GenerationParams(max_new_tokens=64, stop=sql_stop, prompt_lookup=True, draft_text=pseudo_sql)),
        ([req(f"Question: {QUESTION}\nCandidate SQL: {CANDIDATE}\nExecution: {FEEDBACK}\nIf it is right, repeat it; "
              "otherwise write the corrected SQL. SQL only.")],
         GenerationParams(max_new_tokens=64, stop=sql_stop, prompt_lookup=True, draft_text=CANDIDATE)),
        ([req(f"Question: {QUESTION}\nComplete this SQL query: {CANDIDATE[:45]}")],
         GenerationParams(max_new_tokens=64, stop=sql_stop, prompt_lookup=True, draft_text=CANDIDATE)),
    ]


def run_engine(engine: TransformersEngine, calls) -> tuple[float, int]:
    engine._prefix_cache.clear()  # each repetition starts cold, like a new question on a new schema
    started, tokens = time.perf_counter(), 0
    for requests, params in calls:
        tokens += sum(c.output_tokens for c in engine.generate(requests, params))
    return time.perf_counter() - started, tokens


def run_naive(engine: TransformersEngine, calls) -> tuple[float, int]:
    """Each request alone through plain `model.generate` on its full prompt: no cache, no batching."""
    import torch

    tok, model = engine.tokenizer, engine.base_model
    started, tokens = time.perf_counter(), 0
    for requests, params in calls:
        for request in requests:
            ids = tok.apply_chat_template(request.as_dicts(), add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            kwargs = {"stop_strings": list(params.stop), "tokenizer": tok} if params.stop else {}
            with torch.inference_mode():
                out = model.generate(**ids, max_new_tokens=params.max_new_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=tok.pad_token_id, **kwargs)
            tokens += out.shape[1] - ids["input_ids"].shape[1]
    return time.perf_counter() - started, tokens


def rates(engine: TransformersEngine, schema: str, repeat: int) -> dict[str, float]:
    """Prefill tokens/s (one long prompt, 1 new token) and decode tokens/s at batch 1 and 4."""
    import routesh.engine.hf as hf

    saved, hf._MIN_PREFIX_TOKENS = hf._MIN_PREFIX_TOKENS, 10**9  # measure raw model speed, no reuse
    try:
        prompt = [ChatRequest.of(("user", schema + "\nSummarise."))]
        prefill = []
        for _ in range(repeat):
            c = engine.generate(prompt, GenerationParams(max_new_tokens=1))[0]
            prefill.append(c.prompt_tokens / c.seconds)
        out = {"prompt tokens": prompt and c.prompt_tokens, "prefill tok/s": statistics.median(prefill)}
        short = ChatRequest.of(("user", "Write a long story about databases."))
        for batch in (1, 4):
            speeds = []
            for _ in range(repeat):
                done = engine.generate([short] * batch, GenerationParams(max_new_tokens=64))
                decode_s = done[0].seconds - (done[0].first_token_seconds or 0)
                speeds.append(sum(max(c.output_tokens - 1, 0) for c in done) / decode_s)
            out[f"decode tok/s, batch {batch}"] = statistics.median(speeds)
        return out
    finally:
        hf._MIN_PREFIX_TOKENS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="time the conversion into a fresh cache too")
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}")
    if args.cold:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["ROUTESH_CACHE_DIR"] = cache
            started = time.perf_counter()
            materialize(args.model, progress=False)
            print(f"load, cold (assemble + verify + convert): {time.perf_counter() - started:.1f} s")
            del os.environ["ROUTESH_CACHE_DIR"]
    materialize(args.model, progress=False)
    started = time.perf_counter()
    engine = load_engine(args.model, progress=False)
    print(f"load, warm (cached bf16 folder): {time.perf_counter() - started:.1f} s  [{engine.dtype}]")
    schema = schema_text()
    for name, value in rates(engine, schema, args.repeat).items():
        print(f"{name:22}: {value:8.1f}")

    calls = pipeline_calls(schema)
    engine_times, naive_times = [], []
    for i in range(args.repeat):
        seconds, tokens_e = run_engine(engine, calls)
        engine_times.append(seconds)
        seconds, tokens_n = run_naive(engine, calls)
        naive_times.append(seconds)
        print(f"  run {i + 1}: engine {engine_times[-1]:6.2f} s ({tokens_e} tokens out), "
              f"naive {naive_times[-1]:6.2f} s ({tokens_n} tokens out)")
    e, n = statistics.median(engine_times), statistics.median(naive_times)
    print(f"pipeline-like workload (4 calls, 5 requests, shared schema): engine {e:.2f} s, naive {n:.2f} s, "
          f"speed-up {n / e:.2f}x (medians of {args.repeat})")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
