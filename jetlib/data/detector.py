"""A CMS-like detector in three image channels: Tracks, ECAL, HCAL.

Generator-level final-state particles become a ``(125, 125, 3)`` image centred on
the jet axis. The geometry and resolutions follow the CMS barrel, the detector
behind the public quark/gluon images (Andrews et al., *End-to-end jet
classification of quarks and gluons with the CMS Open Data*, NIM A 977 (2020)
164304), simplified as below. Each simplification is a choice a user may want to
change, so each is a :class:`DetectorConfig` field.

Geometry
    Pixels are ECAL crystals, ``0.0174 x 0.0174`` in (eta, phi). Axis 0 of the image
    is eta, axis 1 is phi; the jet axis is at the centre of pixel (62, 62), so the
    image spans +-1.09 in both. phi differences wrap around 2 pi.
Tracks (channel 0)
    Charged particles with pT > 0.5 GeV and |eta| < 2.5 (the tracker), their pT in
    GeV, unsmeared (tracker resolution is far better than the calorimeters').
ECAL (channel 1)
    Photons and electrons, energy smeared with the CMS barrel resolution
    ``sigma/E = 2.8%/sqrt(E) (+) 0.12 GeV/E (+) 0.3%`` (terms in quadrature), then
    converted to transverse energy ``E_T = E / cosh(eta)``, in GeV, in one crystal.
HCAL (channel 2)
    Hadrons (charged and neutral), energy smeared with ``100%/sqrt(E) (+) 5%``,
    ``E_T`` summed in towers of 5x5 crystals (0.087 x 0.087, the CMS HCAL tower),
    then spread evenly over the tower's 25 pixels, so the image sum is the tower
    sum. The central tower is centred on the jet axis.

Not modelled: pile-up, the magnetic field (particles point straight from the
vertex), shower spread beyond one cell, electronic noise in empty cells, muon
deposits in the calorimeters (muons appear only as tracks). Smeared energies
below zero are set to zero, so every pixel is >= 0 and empty pixels are exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EM_IDS = (11, 22)  # electrons and photons shower in the ECAL
MUON_ID = 13


@dataclass(frozen=True)
class DetectorConfig:
    image_size: int = 125  # pixels per side
    pixel: float = 0.0174  # pixel size in eta and phi (one CMS ECAL crystal)
    hcal_tower: int = 5  # HCAL tower side, in pixels
    track_pt_min: float = 0.5  # GeV: tracks below are not reconstructed
    tracker_eta_max: float = 2.5  # tracker acceptance
    ecal_stochastic: float = 0.028  # ECAL sigma/E terms: a/sqrt(E), b/E (GeV), c
    ecal_noise: float = 0.12
    ecal_constant: float = 0.003
    hcal_stochastic: float = 1.0  # HCAL sigma/E terms: a/sqrt(E), c
    hcal_constant: float = 0.05

    def __post_init__(self):
        if self.image_size % self.hcal_tower:
            raise ValueError("image size must be a whole number of HCAL towers")


def _smear(energy: np.ndarray, stochastic: float, noise: float, constant: float,
           rng: np.random.Generator) -> np.ndarray:
    e = np.maximum(energy, 1e-9)
    rel = np.sqrt((stochastic / np.sqrt(e)) ** 2 + (noise / e) ** 2 + constant**2)
    return np.maximum(energy * (1.0 + rel * rng.standard_normal(len(energy))), 0.0)


def make_images(event: np.ndarray, pid: np.ndarray, charged: np.ndarray, px: np.ndarray, py: np.ndarray,
                pz: np.ndarray, e: np.ndarray, jet_eta: np.ndarray, jet_phi: np.ndarray,
                cfg: DetectorConfig, rng: np.random.Generator) -> np.ndarray:
    """Images of ``n = len(jet_eta)`` jets from their events' visible final-state particles.

    Args:
        event: (P,) index of each particle's event, in ``[0, n)``.
        pid: (P,) PDG id; charged: (P,) bool.
        px, py, pz, e: (P,) four-momenta, GeV.
        jet_eta, jet_phi: (n,) jet axes the images are centred on.
        rng: draws the calorimeter smearing.

    Returns:
        (n, size, size, 3) float32: Tracks, ECAL, HCAL, GeV of (transverse) momentum/energy.
    """
    n, size, tower = len(jet_eta), cfg.image_size, cfg.hcal_tower
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    phi = np.arctan2(py, px)
    deta = eta - jet_eta[event]
    dphi = np.mod(phi - jet_phi[event] + np.pi, 2 * np.pi) - np.pi
    i = np.floor(deta / cfg.pixel + size / 2).astype(np.int64)
    j = np.floor(dphi / cfg.pixel + size / 2).astype(np.int64)
    inside = (i >= 0) & (i < size) & (j >= 0) & (j < size)
    apid = np.abs(pid)
    em = np.isin(apid, EM_IDS)
    hadron = ~em & (apid != MUON_ID)

    def deposit(mask, values, ii, jj, grid):
        lin = (event[mask] * grid + ii[mask]) * grid + jj[mask]
        return np.bincount(lin, weights=values, minlength=n * grid * grid).reshape(n, grid, grid)

    out = np.empty((n, size, size, 3), dtype=np.float32)
    trk = inside & charged & (pt > cfg.track_pt_min) & (np.abs(eta) < cfg.tracker_eta_max)
    out[..., 0] = deposit(trk, pt[trk], i, j, size)

    ecal = inside & em
    e_ecal = _smear(e[ecal], cfg.ecal_stochastic, cfg.ecal_noise, cfg.ecal_constant, rng)
    out[..., 1] = deposit(ecal, e_ecal / np.cosh(eta[ecal]), i, j, size)

    hcal = inside & hadron
    e_hcal = _smear(e[hcal], cfg.hcal_stochastic, 0.0, cfg.hcal_constant, rng)
    towers = deposit(hcal, e_hcal / np.cosh(eta[hcal]), i // tower, j // tower, size // tower)
    out[..., 2] = np.repeat(np.repeat(towers, tower, axis=1), tower, axis=2) / tower**2
    return out
