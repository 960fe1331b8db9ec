"""jetlib: self-supervised learning (SimCLR, VICReg, Barlow Twins, BYOL) on particle-physics jet images.

The package is organised by pipeline step (see ``docs/design.md``):
``jetlib.data`` (simulate, validate, ingest, stream back), and the training,
evaluation and pipeline modules built on top of it.
"""

__version__ = "0.1.0"
