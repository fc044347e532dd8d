#!/usr/bin/env bash
# Ablations of the default model's stage 2 (MODEL_CARD.md, "Ablations"): one stage-2 run per
# config in bench/ablations/, each warm-started from the stage-1 model, then the same held-out
# evaluation for every row. Resumable: a finished run or evaluation is not redone.
#
#   bash bench/ablate_default.sh [NAME ...]     # default: every ablation row, in the order below
#   bash bench/ablate_default.sh long-cosine takes-long   # the 40-epoch runs of the model card
#
# Needs ../shared/data (or SINGER_SHARED_DIR), the `train` extra, and the stage-1 weights at
# data/runs/default/last.pt (`python -m model train --recipe shared ...`, MODEL_CARD.md; they
# are also the previous default: git show 55a2a8d:model/weights/cross-default.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
HOLDOUT=abjones,bobon,geniusturtle,khair,yifen
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(distill takes channel no-distill accompaniments-only default codec)
for name in "${names[@]}"; do
  cfg=bench/ablations/$name.train.json
  recipe=teacher  # ../shared/data + the a cappella takes
  [ "$name" = distill ] && recipe=shared  # the only row without the takes
  run=data/runs/ablation-$name
  if [ ! -f "$run/done" ]; then
    "$PY" -m model train --recipe "$recipe" --holdout "$HOLDOUT" --val-singers ariel,stool \
      --config "$cfg" --out "$run"
    touch "$run/done"
  fi
  [ -f "data/eval/ablation-$name/results.json" ] ||
    "$PY" -m model evaluate --recipe mir1k --all-segments --singers "$HOLDOUT" \
      --checkpoint "$run/last.pt" --name "$name" --out "data/eval/ablation-$name"
  # the second dev figure: a cappella verification EER (mono branch, held-out takes)
  [ -f "data/eval/ablation-$name-acappella/acappella_eer.json" ] ||
    "$PY" -m model evaluate --recipe acappella --checkpoint "$run/last.pt" --name "$name" \
      --out "data/eval/ablation-$name-acappella"
  # the third: the same takes across domains (second halves mixed at 0 dB, mixed branch)
  [ -f "data/eval/ablation-$name-acappella-x0/acappella_eer.json" ] ||
    "$PY" -m model evaluate --recipe acappella --cross-domain-snr 0 --checkpoint "$run/last.pt" \
      --name "$name" --out "data/eval/ablation-$name-acappella-x0"
done
