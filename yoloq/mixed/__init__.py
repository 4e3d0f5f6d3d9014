"""Mixed precision (issue 18): per-layer bit widths chosen by EAGL or ALPS gains and an exact knapsack under a
BOPs budget. cost.py counts MACs and BOPs, groups.py finds layers that must share a precision, knapsack.py
chooses, eagl.py estimates the gains (search.py also draws random ones), plan.py reads and writes layer_bits.yaml,
command.py is `yoloq mixed`."""
