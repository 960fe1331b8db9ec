"""Self-supervised losses, one module each: InfoNCE (SimCLR), VICReg, Barlow Twins and BYOL.

Every loss is computed in fp32 inside an autocast region and uses the *global* batch under
DDP (:func:`jetlib.dist.gather`), so N processes give the loss and gradients of one process
on the whole batch.
"""

from jetlib.losses.infonce import InfoNCELoss

__all__ = ["InfoNCELoss"]
