"""Graph experiments: TU data sets (``graph_exps.data``) and GNNs (``graph_exps.models``).

The submodules are not imported here, so ``python -m graph_exps.<entry point>`` only pays for
what it uses (importing ``torch_geometric`` alone takes seconds).
"""

import warnings

# torch_geometric's import calls torch.jit.script, which torch 2.14 deprecates: a warning
# every graph command would print without being about anything the user did
warnings.filterwarnings(
    "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
)
