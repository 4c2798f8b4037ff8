#!/usr/bin/env bash
# The paper-recipe training commands. Dataset paths come from config.yml
# (HFLICKR_PATH, HDAY2NIGHT_PATH, HCOCO_PATH, HADOBE5K_PATH = HAdobe5k resized to
# <= 1024 px by scripts/prepare_iharmony4.py --resize-hadobe5k, HADOBE5K1_PATH =
# the original HAdobe5k, IHD_PATH = the root with IHD_train.txt).
# Weights land in EXPS_PATH/<model>/<NNN>_<exp-name>/checkpoints/last_checkpoint.pth.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-.venv/bin/python}

# DucoNet 256 (ACM MM 2023): 2 GPUs, global batch 64 -> lr 1e-3 (lr x sqrt(batch/64)), 120 epochs.
# The DucoNet repository's train.sh used batch 32 (lr 7.07e-4); its README batch 64.
$PY train.py models/DucoNet_256.py --workers=8 --gpus=0,1 --batch-size=64 --exp-name=DucoNet_256

# DucoNet 1024 on full-resolution HAdobe5k: 1 GPU, batch 4 -> lr 2.5e-4, 120 epochs.
$PY train.py models/DucoNet_1024.py --workers=8 --gpus=0 --batch-size=4 --exp-name=DucoNet_1024

# iSSAM 256 (the baseline of the same family; DucoNet's RGB backbone alone).
$PY train.py models/iSSAM_256.py --workers=8 --gpus=0 --batch-size=16 --exp-name=iSSAM_256

# BargainNet 256 (ICME 2021): the official code trained with batch 1 on 1 GPU for 200 epochs.
$PY train.py models/BargainNet_256.py --workers=4 --gpus=0 --batch-size=1 --exp-name=BargainNet_256

# Several machines: the same scripts under torchrun, e.g. 2 nodes x 8 GPUs
#   torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \
#       train.py models/DucoNet_256.py --batch-size=64 --exp-name=DucoNet_256_16gpu
