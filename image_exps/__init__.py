"""Image experiments: data sets (``image_exps.data``) and models (``image_exps.models``).

The submodules are not imported here, so ``python -m image_exps.<entry point>`` only pays for
what it uses.
"""
