#!/usr/bin/env bash
# rgpt4d on Slurm: start a Ray head on the first allocated node and one Ray worker on every other node (srun),
# wait until all of them joined, submit one job with `ray job submit`, and exit with the job's status.
#
#   sbatch cluster/slurm/ray_sbatch.sh                                   # the paper's distillation run (default)
#   sbatch --nodes=2 cluster/slurm/ray_sbatch.sh python pipelines/precompute.py --config conf/precompute/cluster.yaml \
#     --config conf/expert/l4p_vitg.yaml input.dataset_root=s3://YOUR_BUCKET/rgpt4d/data \
#     output.uri=s3://YOUR_BUCKET/rgpt4d/shards/l4p-vitg-16f
#   RGPT4D_VENV=/shared/rgpt4d/.venv sbatch cluster/slurm/ray_sbatch.sh ...        # a venv on the shared filesystem
#
# Requirements: a Python 3.11 environment with this package and the CUDA torch build on every node (a venv on a
# shared filesystem, see docs/cluster.md), run from the repo root (submitted as the job's working directory); the
# presets read the NVILA-Lite-8B and L4P weights from /mnt/weights (mount the shared copy there, or override
# student.init_checkpoint= / expert.checkpoint=).
# Preemption/requeue: the job resumes from its latest checkpoint when resubmitted with the same run name and
# storage path (the default entrypoint pins both), so `--requeue` is safe.
#SBATCH --job-name=rgpt4d
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --mem=0
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=rgpt4d-%x-%j.out

set -euo pipefail

RAY_PORT="${RAY_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"
RUN_NAME="${RUN_NAME:-p4d-nvila-lite-8b}"
STORAGE="${STORAGE:-s3://YOUR_BUCKET/rgpt4d/runs}"
SHARDS="${SHARDS:-s3://YOUR_BUCKET/rgpt4d/shards/l4p-vitg-16f}"
MLFLOW_URI="${MLFLOW_TRACKING_URI:-http://mlflow.internal:5000}"

if [[ $# -gt 0 ]]; then
  ENTRYPOINT=("$@")
else
  ENTRYPOINT=(python pipelines/distill.py --config conf/distill/nvila_lite_8b_a100.yaml \
    "run.name=${RUN_NAME}" "run.storage_path=${STORAGE}" "data.shards=${SHARDS}" "mlflow.tracking_uri=${MLFLOW_URI}")
fi

if [[ -n "${RGPT4D_VENV:-}" ]]; then
  # shellcheck disable=SC1091
  source "${RGPT4D_VENV}/bin/activate"
fi

# Same settings for every Ray process and the driver (stack-notes §9.3): the job nodes' network is private to
# the allocation; export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN before sbatch to turn on token auth instead.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

mapfile -t NODES < <(scontrol show hostnames "${SLURM_JOB_NODELIST}")
HEAD_NODE="${NODES[0]}"
HEAD_IP="$(srun --nodes=1 --ntasks=1 -w "${HEAD_NODE}" hostname --ip-address | awk '{print $1}')"
NUM_NODES="${#NODES[@]}"
GPUS_PER_NODE="${SLURM_GPUS_PER_NODE:-0}"
GPUS_PER_NODE="${GPUS_PER_NODE##*:}"          # "a100:8" -> "8"
CPUS_PER_NODE="${SLURM_CPUS_PER_TASK:-$(nproc)}"
echo "[rgpt4d] ${NUM_NODES} node(s); head ${HEAD_NODE} (${HEAD_IP}:${RAY_PORT}); ${GPUS_PER_NODE} GPU(s)/node"

# Head: --block keeps the srun step alive as long as Ray runs; it also takes training work (its GPUs count).
srun --nodes=1 --ntasks=1 --overlap -w "${HEAD_NODE}" \
  ray start --head --node-ip-address="${HEAD_IP}" --port="${RAY_PORT}" \
    --dashboard-host=127.0.0.1 --dashboard-port="${DASHBOARD_PORT}" \
    --num-cpus="${CPUS_PER_NODE}" --num-gpus="${GPUS_PER_NODE}" --disable-usage-stats --block &

until ray status --address="${HEAD_IP}:${RAY_PORT}" >/dev/null 2>&1; do sleep 5; done

if (( NUM_NODES > 1 )); then
  srun --nodes=$((NUM_NODES - 1)) --ntasks=$((NUM_NODES - 1)) --ntasks-per-node=1 --overlap \
    --exclude="${HEAD_NODE}" \
    ray start --address="${HEAD_IP}:${RAY_PORT}" \
      --num-cpus="${CPUS_PER_NODE}" --num-gpus="${GPUS_PER_NODE}" --disable-usage-stats --block &
fi

# Wait for every node to register before submitting (Ray Train would otherwise wait for resources anyway).
python - "${HEAD_IP}:${RAY_PORT}" "${NUM_NODES}" <<'PY'
import sys, time
import ray

address, expected = sys.argv[1], int(sys.argv[2])
ray.init(address=address, logging_level="ERROR")
deadline = time.monotonic() + 600
while (alive := sum(n["Alive"] for n in ray.nodes())) < expected:
    if time.monotonic() > deadline:
        sys.exit(f"[rgpt4d] only {alive}/{expected} Ray nodes joined within 10 minutes")
    time.sleep(5)
print(f"[rgpt4d] {alive} Ray nodes up: {ray.cluster_resources()}")
PY

# The dashboard (job API) listens on the head = this batch host; the job runs in an uploaded copy of the repo.
set +e
ray job submit --address="http://127.0.0.1:${DASHBOARD_PORT}" \
  --submission-id="rgpt4d-${SLURM_JOB_ID}-${SLURM_RESTART_COUNT:-0}" \
  --working-dir="${SLURM_SUBMIT_DIR:-.}" --runtime-env=cluster/runtime_env.yaml \
  -- "${ENTRYPOINT[@]}"
status=$?
set -e
ray stop --force >/dev/null 2>&1 || true
exit "${status}"
