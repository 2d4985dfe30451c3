#!/bin/bash
# usage: run_sum.sh NAME MODEL [extra args...]
cd /work/wt-sum && . /work/main/.venv/bin/activate && export PYTHONPATH=/work/wt-sum OMP_NUM_THREADS=1
name=$1; model=$2; shift 2
python benchmarks/real_translation.py train --task summarization --data demo --model $model --hidden 128 --layers 2 --heads 4 --batch 16 --lr 2e-3 --schedule cosine --warmup 50 --steps 300 --max-source 32 --max-target 32 --label-smoothing 0 --beams 1 --label $name --out benchmarks/results/real/sum_$name.json "$@" > /tmp/sum_$name.log 2>&1
tail -1 /tmp/sum_$name.log
