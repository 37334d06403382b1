"""ECG experiments: MIT-BIH heartbeats (``ecg_exps.data``) and their models (``ecg_exps.models``).

The submodules are not imported here, so ``python -m ecg_exps.<entry point>`` only pays for
what it uses.
"""

import warnings

# wfdb 4.3 calls pandas methods with inplace=True, which pandas 3 deprecates: warnings on
# every record read that are not about anything the user did
warnings.filterwarnings("ignore", message="The inplace keyword", module=r"wfdb\.")
