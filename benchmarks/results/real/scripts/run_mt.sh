#!/bin/bash
cd /work/wt-sum && . /work/main/.venv/bin/activate && export PYTHONPATH=/work/wt-sum OMP_NUM_THREADS=1
name=$1; shift
python benchmarks/real_translation.py train --task translation --model transformer:transformer --hidden 128 --layers 2 --steps 300 --test-size 100 --beams 1 --label $name --out benchmarks/results/real/$name.json "$@" > /tmp/mt_$name.log 2>&1
tail -1 /tmp/mt_$name.log
