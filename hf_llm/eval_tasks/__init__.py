"""lm-evaluation-harness tasks that hf_llm defines and ships: give this folder to `lm_eval --include_path`
(`hf-llm harness-tasks` prints it). Each task is a YAML file with its data next to it; nothing here imports hf_llm.

- `hf_llm_pydoc`: 44 multiple-choice items made from the first sentences of Python standard-library docstrings
  (the embedded corpus's kind of text): the sentence's first half is the context, its second half the right
  ending among four (the other three are endings of other items); scored by loglikelihood, `acc` and `acc_norm`;
  chance is 25%.
"""
