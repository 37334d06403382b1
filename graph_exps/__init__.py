"""Graph experiments: TU data sets (``graph_exps.data``) and GNNs (``graph_exps.models``).

The submodules are not imported here, so ``python -m graph_exps.<entry point>`` only pays for
what it uses (importing ``torch_geometric`` alone takes seconds).
"""
