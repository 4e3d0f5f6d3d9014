"""The stages of a run, one file each, run in order by engine/pipeline.py: fp (trained once and cached), qat
(the method's callbacks), soft_round (an evaluation, Table 1), qc (quantization correction, then the fold check)."""
