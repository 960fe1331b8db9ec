"""Self-supervised losses, one module each: InfoNCE (SimCLR), VICReg, Barlow Twins and BYOL.

Every loss is computed in fp32 inside an autocast region and is correct under DDP: InfoNCE,
VICReg and Barlow Twins gather the global batch with gradients (:func:`jetlib.dist.gather`);
BYOL's loss is a per-jet mean and needs no gather.
"""

from jetlib.losses.barlowtwins import BarlowTwinsLoss
from jetlib.losses.byol import byol_loss, byol_momentum, ema_update
from jetlib.losses.infonce import InfoNCELoss
from jetlib.losses.vicreg import VICRegLoss

__all__ = ["BarlowTwinsLoss", "InfoNCELoss", "VICRegLoss", "byol_loss", "byol_momentum", "ema_update"]
