"""Data: iHarmony4 reading, joint augmentation, colour conversion, HSynth."""
