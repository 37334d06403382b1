"""Text experiments: GLUE tasks tokenized for BERT (``text_exps.data``).

The submodules are not imported here, so ``python -m text_exps.<entry point>`` only pays for
what it uses (importing ``transformers`` or ``datasets`` alone takes seconds).
"""
