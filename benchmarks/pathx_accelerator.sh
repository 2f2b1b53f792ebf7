#!/usr/bin/env bash
# Path-X (LRA, 128x128 = 16,384 steps) at the paper's settings on an accelerator:
# the `pathx paper` preset (ELM d_m 150, tau_s 150, tau_m 1-2e4, 8 grey levels, Adam
# 2e-4, cosine, batch 768 sharded over every local device by the trainer), interrupted
# after STOP steps and resumed to STEPS, then the checkpointed run is evaluated.
#
#   bash benchmarks/pathx_accelerator.sh [WORKDIR]
#
# Environment (defaults: the paper's run; set smaller values for a short device check):
#   PATHX_DATA    official pathfinder128 folder (unset: generate PATHX_IMAGES images)
#   PATHX_IMAGES  generated images (200000, the LRA size)
#   STEPS         optimizer steps (62,700 = 300 epochs of 160k images at batch 768)
#   STOP          steps before the simulated interruption (STEPS / 2)
#   BATCH         global batch (768); EXTRA more --set KEY=VALUE items
#   PY            python executable (python3)
# Prints the report of the resumed run (s/step, tokens/s, test accuracy) and writes
# everything under WORKDIR.  Never run by the tests.
set -euo pipefail
W=${1:-runs/pathx_paper}
PY=${PY:-python3}
STEPS=${STEPS:-62700}
STOP=${STOP:-$((STEPS / 2))}
BATCH=${BATCH:-768}
SET=(train.steps=$STEPS train.batch_size=$BATCH task.workers=$(nproc))
if [ -n "${PATHX_DATA:-}" ]; then SET+=(task.data_dir=$PATHX_DATA);
else SET+=(task.num_images=${PATHX_IMAGES:-200000}); fi
if [ "$STEPS" -lt 1000 ]; then
  SET+=(train.eval_every=$STOP train.checkpoint_every=$STOP train.log_every=1); fi
# shellcheck disable=SC2206
SET+=(${EXTRA:-})
export PYTHONPATH=${PYTHONPATH:-}:$(pwd)
echo "== $(date -u +%FT%TZ) devices: $($PY -c 'import jax; print(jax.devices())')"
$PY -m elm_jax.cli train --task pathx --preset paper --workdir "$W" --no-progress \
    --set "${SET[@]}" --stop-after-steps "$STOP" || [ $? -eq 3 ]
echo "== $(date -u +%FT%TZ) resuming from step $STOP"
$PY -m elm_jax.cli train --task pathx --preset paper --workdir "$W" --no-progress \
    --set "${SET[@]}" --resume --json
