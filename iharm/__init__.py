"""iharm: deep image harmonization (DucoNet, BargainNet, iSSAM) on iHarmony4."""
__version__ = "0.1.0"
